"""The rule schema on its own: what a realistic ESP rule of each type looks like once
validated, what is refused (with a message naming the field), and how messages render.
Thresholds are in the canonical units: psi, degC, bbl/d, A, Hz, mm/s."""

from __future__ import annotations

from typing import Any

import pytest

from shared.alerting.rules import (
    RULE_TYPES,
    CompareRule,
    DiagnosisRule,
    MqttAction,
    NoDataRule,
    RangeRule,
    RateOfChangeRule,
    ThresholdRule,
    WebhookAction,
    WindowRule,
    parse_rule,
    stored_form,
)
from shared.errors import ValidationFailed

HOT_MOTOR: dict[str, Any] = {
    "type": "threshold", "name": "motor too hot", "metric": "motor_temp", "op": ">",
    "value": 150.0, "severity": "critical", "for_seconds": 120,
    "scope": {"device_type": "esp"},
    "actions": [{"kind": "mqtt", "topic": "insa/notify/field-ops"},
                {"kind": "email", "to": ["night.shift@example.com"]}]}

# One realistic rule per type, and the class it must validate to.
ESP_RULES: list[tuple[dict[str, Any], type]] = [
    (HOT_MOTOR, ThresholdRule),
    ({"type": "range", "name": "intake pressure out of band", "metric": "pip",
      "low": 300.0, "high": 1500.0, "clear_low": 350.0, "clear_high": 1450.0,
      "scope": {"tag": "north-field"}}, RangeRule),
    ({"type": "rate_of_change", "name": "discharge pressure collapsing",
      "metric": "discharge_pressure", "window_seconds": 300, "per_seconds": 60, "op": "<",
      "value": -50.0}, RateOfChangeRule),
    ({"type": "window", "name": "vibration above ISO zone C", "metric": "vibration",
      "stat": "avg", "window_seconds": 600, "op": ">", "value": 7.1,
      "renotify_seconds": 3600}, WindowRule),
    ({"type": "compare", "name": "no head", "metric": "discharge_pressure", "op": "<",
      "other_metric": "pip", "offset": 300.0, "max_age_seconds": 120}, CompareRule),
    ({"type": "compare", "name": "current above twin well", "metric": "motor_current",
      "op": ">", "other_device_id": "W-2", "offset": 10.0,
      "scope": {"device_id": "W-1"}}, CompareRule),
    ({"type": "window", "name": "flow low", "metric": "flow_rate", "stat": "min",
      "window_seconds": 900, "op": "<", "value": 800.0}, WindowRule),
    ({"type": "threshold", "name": "VSD over speed", "metric": "vsd_frequency", "op": ">=",
      "value": 65.0, "escalation": {"after_seconds": 1800, "severity": "critical"},
      "actions": [{"kind": "webhook", "url": "https://scada.example.com/hooks/alerts",
                   "secret": "scada"}]}, ThresholdRule),
    ({"type": "no_data", "name": "well silent", "after_seconds": 900}, NoDataRule),
    ({"type": "no_data", "name": "no flow meter", "metric": "flow_rate",
      "after_seconds": 600}, NoDataRule),
    ({"type": "diagnosis", "name": "gas lock", "code": "gas_lock",
      "min_severity": "warning"}, DiagnosisRule),
    ({"type": "diagnosis", "name": "any critical diagnosis", "code": "*",
      "min_severity": "critical", "severity": "critical"}, DiagnosisRule),
]


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as caught:
        parse_rule(data)
    assert caught.value.reason == "invalid_rule"
    return caught.value.message


@pytest.mark.parametrize(("data", "cls"), ESP_RULES, ids=[d["name"] for d, _ in ESP_RULES])
def test_a_realistic_esp_rule_of_each_type_is_accepted(data: dict[str, Any], cls: type
                                                       ) -> None:
    rule = parse_rule(data)
    assert type(rule) is cls
    assert rule.model_dump(exclude_unset=True) == data


def test_every_rule_type_has_a_realistic_example_here() -> None:
    assert {d["type"] for d, _ in ESP_RULES} == set(RULE_TYPES)


@pytest.mark.parametrize(("data", "cls"), ESP_RULES, ids=[d["name"] for d, _ in ESP_RULES])
def test_the_stored_form_with_its_name_validates_back_to_the_same_rule(
        data: dict[str, Any], cls: type) -> None:
    rule = parse_rule(data)
    stored = stored_form(rule)
    assert "name" not in stored and "enabled" not in stored
    assert parse_rule({**stored, "name": rule.name}) == rule


def test_defaults_of_a_minimal_threshold_rule() -> None:
    rule = parse_rule({"type": "threshold", "name": "pip low", "metric": "pip", "op": "<",
                       "value": 200})
    assert isinstance(rule, ThresholdRule)
    assert (rule.enabled, rule.severity, rule.for_seconds, rule.renotify_seconds,
            rule.escalation, rule.actions) == (True, "warning", 0.0, None, None, [])
    assert rule.scope.matches("any-well", None, frozenset())


def test_a_stored_rule_with_a_legacy_secret_env_still_loads() -> None:
    """Any variable name, as before: the engine keeps evaluating the rule, and refuses to
    sign with a variable outside INSA_WEBHOOK_SECRET_ when it sends (test_actions.py)."""
    rule = parse_rule(threshold(actions=[{"kind": "webhook", "url": "https://x.example/h",
                                          "secret_env": "INSA_SCADA_HOOK_SECRET"}]))
    assert isinstance(rule.actions[0], WebhookAction)
    assert (rule.actions[0].secret, rule.actions[0].secret_env) == \
        (None, "INSA_SCADA_HOOK_SECRET")


def test_actions_are_told_apart_by_kind() -> None:
    rule = parse_rule(ESP_RULES[7][0])
    assert isinstance(rule.actions[0], WebhookAction)
    assert rule.actions[0].timeout_seconds == 5.0
    hot = parse_rule(HOT_MOTOR)
    assert isinstance(hot.actions[0], MqttAction) and hot.actions[0].qos == 1


# --- refusals ------------------------------------------------------------------------------
def threshold(**changes: Any) -> dict[str, Any]:
    return {**HOT_MOTOR, **changes}


def compare(**changes: Any) -> dict[str, Any]:
    return {"type": "compare", "name": "no head", "metric": "discharge_pressure", "op": "<",
            **changes}


def range_rule(**changes: Any) -> dict[str, Any]:
    return {"type": "range", "name": "pip band", "metric": "pip", "low": 300.0,
            "high": 1500.0, **changes}


# (data, what the message starts with, words it must contain)
REFUSED: dict[str, tuple[dict[str, Any], str, tuple[str, ...]]] = {
    "bad op": (threshold(op="=>"), "op:", ("'>'",)),
    "unknown type": (threshold(type="spike"), "type:", ("spike",)),
    "missing type": ({k: v for k, v in HOT_MOTOR.items() if k != "type"}, "type:", ()),
    "missing metric": ({k: v for k, v in HOT_MOTOR.items() if k != "metric"}, "metric:",
                       ("required",)),
    "bad metric name": (threshold(metric="motor temp"), "metric:", ("pattern",)),
    "range low equals high": (range_rule(low=500.0, high=500.0), "rule:",
                              ("low must be below high",)),
    "range low above high": (range_rule(low=1500.0, high=300.0), "rule:",
                             ("low must be below high",)),
    "clear band below the band": (range_rule(clear_low=250.0), "rule:",
                                  ("clear band", "clear_low")),
    "clear band above the band": (range_rule(clear_high=1600.0), "rule:",
                                  ("clear band", "clear_high")),
    "clear band empty": (range_rule(clear_low=900.0, clear_high=900.0), "rule:",
                         ("clear band",)),
    "message names an unknown field": (threshold(message="{rule}: {pump_speed}"), "rule:",
                                       ("message", "pump_speed")),
    "message with a positional field": (threshold(message="{rule} {}"), "rule:",
                                        ("message",)),
    "message not a template": (threshold(message="{rule"), "rule:", ("message",)),
    "scope with two kinds": (threshold(scope={"device_type": "esp", "tag": "north"}),
                             "scope:", ("at most one",)),
    "bad device id in scope": (threshold(scope={"device_id": "W 1"}), "scope.device_id:",
                               ("pattern",)),
    "unknown scope kind": (threshold(scope={"field": "north"}), "scope.field:", ()),
    "compare without other side": (compare(), "rule:",
                                   ("other_metric", "other_device_id")),
    "compare other device without scope device": (
        compare(other_device_id="W-2"), "rule:", ("other_device_id", "scope.device_id")),
    "compare other device with a type scope": (
        compare(other_device_id="W-2", scope={"device_type": "esp"}), "rule:",
        ("scope.device_id",)),
    "compare a metric with itself": (compare(other_metric="discharge_pressure"), "rule:",
                                     ("other_metric",)),
    "escalation to the same severity": (
        threshold(severity="critical", escalation={"after_seconds": 600,
                                                   "severity": "critical"}),
        "rule:", ("escalation.severity",)),
    "escalation to a lower severity": (
        threshold(severity="warning", escalation={"after_seconds": 600, "severity": "info"}),
        "rule:", ("escalation.severity",)),
    "escalation after no time": (
        threshold(severity="warning", escalation={"after_seconds": 0,
                                                  "severity": "critical"}),
        "escalation.after_seconds:", ()),
    "mqtt topic outside insa/notify": (
        threshold(actions=[{"kind": "mqtt", "topic": "insa/telemetry/W-1"}]),
        "actions.0.mqtt.topic:", ("insa/notify/",)),
    "mqtt topic with a wildcard": (
        threshold(actions=[{"kind": "mqtt", "topic": "insa/notify/#"}]),
        "actions.0.mqtt.topic:", ()),
    "mqtt topic only the prefix": (
        threshold(actions=[{"kind": "mqtt", "topic": "insa/notify/"}]),
        "actions.0.mqtt.topic:", ()),
    "mqtt topic a look-alike prefix": (
        threshold(actions=[{"kind": "mqtt", "topic": "insa/notifyx/ops"}]),
        "actions.0.mqtt.topic:", ()),
    "webhook secret_env not an env var name": (
        threshold(actions=[{"kind": "webhook", "url": "https://ops.example.com/hook",
                            "secret_env": "hook-secret"}]),
        "actions.0.webhook.secret_env:", ()),
    "webhook secret_env given as the secret": (
        threshold(actions=[{"kind": "webhook", "url": "https://ops.example.com/hook",
                            "secret_env": "s3cr3t value"}]),
        "actions.0.webhook.secret_env:", ()),
    "webhook secret not a name": (
        threshold(actions=[{"kind": "webhook", "url": "https://ops.example.com/hook",
                            "secret": "../scada hook"}]),
        "actions.0.webhook.secret:", ("pattern",)),
    "webhook secret and the legacy secret_env": (
        threshold(actions=[{"kind": "webhook", "url": "https://ops.example.com/hook",
                            "secret": "scada", "secret_env": "INSA_WEBHOOK_SECRET_SCADA"}]),
        "actions.0.webhook:", ("not both",)),
    "webhook not http": (
        threshold(actions=[{"kind": "webhook", "url": "ftp://ops.example.com/hook"}]),
        "actions.0.webhook.url:", ()),
    "email to nobody": (threshold(actions=[{"kind": "email", "to": []}]),
                        "actions.0.email.to:", ()),
    "unknown extra field": (threshold(colour="red"), "colour:", ("not permitted",)),
    "unknown extra field in escalation": (
        threshold(severity="warning", escalation={"after_seconds": 60,
                                                  "severity": "critical", "to": "boss"}),
        "escalation.to:", ("not permitted",)),
    "bad severity": (threshold(severity="fatal"), "severity:", ()),
    "negative for": (threshold(for_seconds=-1), "for_seconds:", ()),
    "window of no time": ({**ESP_RULES[3][0], "window_seconds": 0}, "window_seconds:", ()),
    "unknown window stat": ({**ESP_RULES[3][0], "stat": "median"}, "stat:", ()),
    "unknown diagnosis code": ({**ESP_RULES[10][0], "code": "sand"}, "code:", ()),
    "no_data without after_seconds": ({"type": "no_data", "name": "silent"},
                                      "after_seconds:", ("required",)),
    # Stored as JSON null, a non-finite number would make the rule unparseable later.
    "NaN threshold": (threshold(value=float("nan")), "value.float:", ("finite",)),
    "infinite threshold": (threshold(value=float("inf")), "value.float:", ("finite",)),
    "infinite range limit": ({**ESP_RULES[1][0], "low": float("-inf")}, "low.float:",
                             ("finite",)),
    "NaN window value": ({**ESP_RULES[3][0], "value": float("nan")}, "value:", ("finite",)),
    "infinite compare offset": (compare(other_metric="pip", offset=float("inf")), "offset:",
                                ("finite",)),
}


@pytest.mark.parametrize(("data", "starts", "words"), REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_rule_is_refused_with_a_message_naming_the_field(
        data: dict[str, Any], starts: str, words: tuple[str, ...]) -> None:
    message = refusal(data)
    assert message.startswith(starts), message
    for word in words:
        assert word in message, message


def test_the_refusal_carries_pydantic_errors_for_the_api() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_rule(threshold(op="=>"))
    errors = caught.value.data["errors"]
    assert isinstance(errors, list) and errors[0]["loc"] == ("threshold", "op")


def test_a_non_mapping_is_refused_as_the_rule() -> None:
    assert refusal(["threshold"]).startswith("rule:")  # type: ignore[arg-type]


@pytest.mark.parametrize("action", [{"kind": "sms", "to": "+5491100000000"},
                                    {"to": ["night.shift@example.com"]}],
                         ids=["unknown kind", "no kind"])
def test_a_bad_action_kind_is_refused_naming_the_action(action: dict[str, Any]) -> None:
    assert refusal(threshold(actions=[action])).startswith("actions.0")


# --- messages ------------------------------------------------------------------------------
def test_the_default_threshold_message_renders_value_and_threshold() -> None:
    rule = parse_rule({**HOT_MOTOR, "value": 150.5})
    assert rule.render("W-1", 152.25, "firing", "critical") == \
        "motor too hot on W-1: motor_temp 152.25 (> 150.5)"


def test_a_custom_message_renders_every_field() -> None:
    rule = parse_rule(threshold(message="[{severity}/{state}] {rule} {device_id} "
                                        "{metric}={value} want {threshold}"))
    assert rule.render("W-7", 151.0, "resolved", "warning") == \
        "[warning/resolved] motor too hot W-7 motor_temp=151 want > 150"


@pytest.mark.parametrize(("data", "value", "expected"), [
    (ESP_RULES[1][0], 1520.0,
     "intake pressure out of band on W-1: pip 1520 "
     "(outside [300, 1500], clears inside [350, 1450])"),
    (ESP_RULES[2][0], -75.5,
     "discharge pressure collapsing on W-1: discharge_pressure -75.5 "
     "(change per 60 s over 300 s < -50)"),
    (ESP_RULES[3][0], 7.4, "vibration above ISO zone C on W-1: vibration 7.4 "
                           "(avg over 600 s > 7.1)"),
    (ESP_RULES[4][0], 1010.0, "no head on W-1: discharge_pressure 1010 (< pip +300)"),
    (ESP_RULES[5][0], 61.0, "current above twin well on W-1: motor_current 61 "
                            "(> W-2.motor_current +10)"),
    (ESP_RULES[8][0], 930.0, "well silent on W-1: no data for 930 s"),
    (ESP_RULES[9][0], 600.0, "no flow meter on W-1: no flow_rate for 600 s"),
    (ESP_RULES[10][0], 0.85, "gas lock on W-1: diagnosis gas_lock "
                             "(gas_lock at warning or above)"),
    (ESP_RULES[11][0], None, "any critical diagnosis on W-1: diagnosis * "
                             "(* at critical or above)"),
], ids=["range", "rate_of_change", "window", "compare metrics", "compare devices",
        "no_data any", "no_data metric", "diagnosis", "diagnosis any"])
def test_each_type_renders_its_default_message(data: dict[str, Any], value: float | None,
                                               expected: str) -> None:
    assert parse_rule(data).render("W-1", value, "firing", "warning") == expected


def test_a_missing_value_renders_as_n_a() -> None:
    assert parse_rule(HOT_MOTOR).render("W-1", None, "resolved", "critical") == \
        "motor too hot on W-1: motor_temp n/a (> 150)"


@pytest.mark.parametrize(("template", "rendered"), [
    ("{value:.1f} psi", "152.2 psi"), ("{device_id.site}", None), ("{rule[200]}", None),
    ("{}", None), ("{0}", None)])
def test_a_message_template_renders_or_is_refused_naming_message(
        template: str, rendered: str | None) -> None:
    if rendered is None:
        assert "message" in refusal(threshold(message=template))
        return
    rule = parse_rule(threshold(message=template))
    assert rule.render("W-1", 152.25, "firing", "critical") == rendered
    assert rule.render("W-1", None, "firing", "critical") == "n/a psi"
