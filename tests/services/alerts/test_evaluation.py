"""The pure alert engine's lifecycle around the conditions: `for`, escalation,
re-notify, acknowledged, the late-data policy, scope, rule changes and priming.
Timestamps are event-time seconds 0, 10, 20, ...; values are in canonical units."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.alerting.evaluation import Device
from tests.utils.alert_engine import (
    Point,
    Seen,
    diagnose,
    engine_with,
    feed,
    hot,
    no_head,
    rule,
    seen,
    series,
    ticks,
)


# --- for -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("points", "expected"), [
    (series(140, 155, 156, 157, 158, 140), [("pending", 10), ("firing", 40), ("resolved", 50)]),
    ([(0, 140), (10, 155), (25, 156), (45, 157)], [("pending", 10), ("firing", 45)]),
    (series(140, 155, 156, 140, 155), [("pending", 10), ("cancelled", 30), ("pending", 40)]),
], ids=["fires at active_since+for", "fires at the first reading past it", "cancelled"])
def test_for_holds_an_alert_pending_until_the_condition_has_held_that_long(
        points: list[Point], expected: Seen) -> None:
    engine = engine_with(hot(for_seconds=30))
    assert feed(engine, "motor_temp", points) == expected


def test_for_transitions_name_the_state_the_store_expects() -> None:
    engine = engine_with(hot(for_seconds=30))
    out = [t for ts, v in series(155, 156, 157, 158, 140, 160, 140)
           for t in engine.observe_reading("W-1", ts, {"motor_temp": v})]
    assert [(t.kind, t.before) for t in out] == [
        ("pending", None), ("firing", "pending"), ("resolved", "firing"),
        ("pending", None), ("cancelled", "pending")]
    assert out[0].alert.fire_at == 30 and out[3].alert.fire_at == 80


def test_for_fires_from_the_timer_when_no_reading_arrives() -> None:
    engine = engine_with(hot(for_seconds=30))
    assert feed(engine, "motor_temp", [(10, 155.0)]) == [("pending", 10)]
    assert engine.tick(39.9) == []
    [fired] = engine.tick(40)
    assert (fired.kind, fired.at, fired.before, fired.value) == ("firing", 40, "pending", 155.0)
    assert feed(engine, "motor_temp", [(50, 156.0)]) == []
    assert ticks(engine, [60, 70]) == []


# --- escalation, re-notify, acknowledged ---------------------------------------------------
def test_renotify_repeats_every_renotify_seconds_while_firing() -> None:
    engine = engine_with(hot(renotify_seconds=300))
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("firing", 0)]
    assert ticks(engine, range(0, 1000, 100)) == \
        [("renotify", 300), ("renotify", 600), ("renotify", 900)]
    assert feed(engine, "motor_temp", [(950, 140.0)]) == [("resolved", 950)]
    assert ticks(engine, range(1000, 2000, 100)) == []


def test_escalation_raises_the_severity_once_after_its_delay() -> None:
    engine = engine_with(hot(severity="warning", renotify_seconds=300,
                             escalation={"after_seconds": 600, "severity": "critical"}))
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("firing", 0)]
    out = [t for now in range(0, 1300, 100) for t in engine.tick(now)]
    assert [(t.kind, t.at, t.severity) for t in out] == [
        ("renotify", 300, "warning"), ("escalated", 600, "critical"),
        ("renotify", 900, "critical"), ("renotify", 1200, "critical")]
    assert [t.before for t in out] == ["firing"] * 4
    [resolved] = engine.observe_reading("W-1", 1250, {"motor_temp": 140.0})
    assert resolved.severity == "critical"


def test_escalation_counts_from_firing_not_from_pending() -> None:
    engine = engine_with(hot(for_seconds=120,
                             escalation={"after_seconds": 600, "severity": "critical"}))
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("pending", 0)]
    assert ticks(engine, range(0, 800, 60)) == [("firing", 120), ("escalated", 720)]


def test_an_acknowledged_alert_neither_escalates_nor_renotifies_but_still_resolves() -> None:
    engine = engine_with(hot(renotify_seconds=300,
                             escalation={"after_seconds": 600, "severity": "critical"}))
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("firing", 0)]
    key = (1, "W-1")
    engine.adopt(key, replace(engine.open[key], state="acknowledged"))
    assert ticks(engine, range(0, 2000, 100)) == []
    assert feed(engine, "motor_temp", [(2000, 170.0)]) == []
    [resolved] = engine.observe_reading("W-1", 2010, {"motor_temp": 140.0})
    assert (resolved.kind, resolved.before, resolved.severity) == \
        ("resolved", "acknowledged", "warning")


def test_an_alert_resolved_by_a_person_is_raised_again_by_the_next_breach() -> None:
    engine = engine_with(hot())
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("firing", 0)]
    engine.adopt((1, "W-1"), None)
    assert feed(engine, "motor_temp", [(10, 161.0)]) == [("firing", 10)]


# --- late data -----------------------------------------------------------------------------
def test_a_late_value_neither_starts_nor_clears_an_alert() -> None:
    engine = engine_with(hot())
    assert feed(engine, "motor_temp", [(0, 140.0), (20, 140.0), (10, 160.0)]) == []
    assert feed(engine, "motor_temp", [(30, 160.0)]) == [("firing", 30)]
    assert feed(engine, "motor_temp", [(25, 140.0), (30, 140.0)]) == []  # before, and at
    assert feed(engine, "motor_temp", [(40, 140.0)]) == [("resolved", 40)]
    assert engine.late == 3


def test_a_late_value_neither_cancels_nor_fires_a_pending_alert() -> None:
    engine = engine_with(hot(for_seconds=30))
    assert feed(engine, "motor_temp", [(0, 160.0), (20, 160.0), (10, 140.0),
                                       (20, 140.0)]) == [("pending", 0)]
    assert feed(engine, "motor_temp", [(30, 160.0)]) == [("firing", 30)]


def test_a_redelivered_batch_makes_no_transitions() -> None:
    engine = engine_with(hot(), rule(type="window", metric="pip", stat="max",
                                     window_seconds=20, op=">", value=1000.0))
    batch = [("W-1", ts, {"motor_temp": 140.0 + ts, "pip": 950.0 + ts})
             for ts in range(0, 100, 10)] + \
        [("W-2", ts, {"motor_temp": 160.0, "pip": 800.0}) for ts in range(0, 100, 10)]
    first = [t for d, ts, m in batch for t in engine.observe_reading(d, ts, m)]
    assert [(t.kind, t.alert.rule_id, t.alert.device_id, t.at) for t in first] == [
        ("firing", 1, "W-1", 20), ("firing", 2, "W-1", 60), ("firing", 1, "W-2", 0)]
    open_before = dict(engine.open)
    assert [t for d, ts, m in batch for t in engine.observe_reading(d, ts, m)] == []
    assert engine.late == 40 and engine.open == open_before


def test_progress_is_per_metric_so_an_older_value_of_another_metric_counts() -> None:
    engine = engine_with(hot())
    assert engine.observe_reading("W-1", 100, {"pip": 900.0}) == []
    assert seen(engine.observe_reading("W-1", 50, {"motor_temp": 160.0})) == [("firing", 50)]
    # pip at 100 again is late, motor_temp at 100 is new
    assert seen(engine.observe_reading("W-1", 100, {"pip": 0.0, "motor_temp": 140.0})) == \
        [("resolved", 100)]
    assert engine.late == 1
    assert engine.take_progress() == {("W-1", "pip"): 100, ("W-1", "motor_temp"): 100}
    assert engine.take_progress() == {}


def test_a_late_diagnosis_event_is_skipped_per_code_and_metric() -> None:
    engine = engine_with(rule(type="diagnosis", code="*"))
    assert diagnose(engine, 10, "gas_lock") == [("firing", 10)]
    assert diagnose(engine, 5, "gas_lock", cleared=True) == []
    assert diagnose(engine, 10, "gas_lock", cleared=True) == []
    assert diagnose(engine, 5, "overload", "critical", metric="motor_current") == []
    assert diagnose(engine, 20, "gas_lock", cleared=True) == []  # overload still active
    assert diagnose(engine, 21, "overload", metric="motor_current", cleared=True) == \
        [("resolved", 21)]


# --- scope ---------------------------------------------------------------------------------
FLEET = {"W-1": Device("esp", frozenset({"north"})), "W-2": Device("pcp", frozenset({"north"})),
         "W-3": Device("esp", frozenset({"south"}))}


@pytest.mark.parametrize(("scope", "fired"), [
    ({}, ["W-1", "W-2", "W-3", "W-4"]),
    ({"device_type": "esp"}, ["W-1", "W-3"]),
    ({"tag": "north"}, ["W-1", "W-2"]),
    ({"device_id": "W-3"}, ["W-3"]),
    ({"device_id": "W-4"}, ["W-4"]),
], ids=["all", "type", "tag", "one device", "one unknown device"])
def test_scope_picks_the_devices_a_rule_judges(scope: dict[str, str], fired: list[str]
                                               ) -> None:
    engine = engine_with(hot(scope=scope), devices=FLEET)
    out = [t for device in ("W-1", "W-2", "W-3", "W-4")
           for t in engine.observe_reading(device, 0, {"motor_temp": 160.0})]
    assert [t.alert.device_id for t in out] == fired


def test_set_device_changing_type_or_tags_rescopes() -> None:
    engine = engine_with(hot(scope={"device_type": "esp"}),
                         hot(scope={"tag": "north"}, name="north"),
                         devices={"W-1": Device("pcp", frozenset({"south"}))})
    assert engine.observe_reading("W-1", 0, {"motor_temp": 160.0}) == []
    assert engine.set_device("W-1", Device("esp", frozenset({"south"})), 5) == []
    assert [t.alert.rule_id for t in engine.observe_reading("W-1", 10, {"motor_temp": 161.0})
            ] == [1]
    assert engine.set_device("W-1", Device("esp", frozenset({"south", "north"})), 15) == []
    assert [t.alert.rule_id for t in engine.observe_reading("W-1", 20, {"motor_temp": 162.0})
            ] == [2]


def test_a_device_leaving_a_rule_s_scope_ends_its_open_alerts() -> None:
    engine = engine_with(hot(scope={"device_type": "esp"}),
                         hot(scope={"device_type": "esp"}, name="slow", for_seconds=600),
                         devices=FLEET)
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("firing", 0), ("pending", 0)]
    out = engine.set_device("W-1", Device("pcp"), 30.0)
    assert [(t.kind, t.before, t.note) for t in out] == [
        ("resolved", "firing", "device out of the rule's scope"),
        ("cancelled", "pending", "device out of the rule's scope")]
    assert engine.open == {}


def test_a_diagnosis_rule_respects_scope() -> None:
    engine = engine_with(rule(type="diagnosis", code="*", scope={"device_type": "esp"}),
                         devices=FLEET)
    assert diagnose(engine, 0, "overload", device="W-2") == []
    assert diagnose(engine, 0, "overload", device="W-3") == [("firing", 0)]


# --- rule changes --------------------------------------------------------------------------
def test_removing_a_rule_resolves_its_open_alerts_with_a_note() -> None:
    keep = rule(type="no_data", after_seconds=300)
    engine = engine_with(hot(), keep)
    for device in ("W-1", "W-2"):
        assert feed(engine, "motor_temp", [(0, 160.0)], device=device) == [("firing", 0)]
    out = engine.set_rules({2: keep}, 500.0)
    assert sorted((t.kind, t.alert.device_id, t.before, t.at, t.note) for t in out) == [
        ("resolved", "W-1", "firing", 500.0, "rule disabled or deleted"),
        ("resolved", "W-2", "firing", 500.0, "rule disabled or deleted")]
    assert all("disabled or deleted" in t.message for t in out)
    assert engine.open == {}
    assert feed(engine, "motor_temp", [(510, 170.0)]) == []


def test_removing_a_rule_cancels_its_pending_alert_never_announced() -> None:
    engine = engine_with(hot(for_seconds=600))
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("pending", 0)]
    assert [(t.kind, t.before) for t in engine.set_rules({}, 10.0)] == [("cancelled", "pending")]


@pytest.mark.parametrize(("changed", "fires_at"), [(False, 70), (True, 130)],
                         ids=["the same rule keeps its window", "a changed rule starts afresh"])
def test_set_rules_resets_the_conditions_of_a_changed_rule_only(changed: bool,
                                                                 fires_at: float) -> None:
    data = {"type": "window", "metric": "pip", "stat": "max", "window_seconds": 60,
            "op": ">", "value": 1000.0}
    engine = engine_with(rule(**data))
    assert feed(engine, "pip", series(*[950.0] * 7)) == []  # judged (clear) from 60 s
    new = rule(**{**data, "value": 999.0}) if changed else rule(**data)
    assert engine.set_rules({1: new}, 65.0) == []
    assert feed(engine, "pip", series(*[1200.0] * 7, start=70)) == [("firing", fires_at)]


# --- prime ---------------------------------------------------------------------------------
def test_prime_fills_a_window_without_judging_it() -> None:
    data = {"type": "window", "metric": "pip", "stat": "avg", "window_seconds": 60,
            "op": "<", "value": 300.0}
    primed, cold = engine_with(rule(**data)), engine_with(rule(**data))
    primed.prime("W-1", "pip", series(*[250.0] * 7))  # breaching, and a whole window
    assert primed.open == {}
    assert feed(primed, "pip", [(70, 240.0)]) == [("firing", 70)]
    assert primed.open[(1, "W-1")].value == pytest.approx((250 * 6 + 240) / 7)
    assert feed(cold, "pip", series(*[240.0] * 7, start=70)) == [("firing", 130)]


def test_prime_restores_silence_timers_and_the_compared_value() -> None:
    engine = engine_with(rule(type="no_data", metric="flow_rate", after_seconds=300),
                         no_head())
    engine.prime("W-1", "flow_rate", [(100.0, 1500.0)])
    engine.prime("W-1", "pip", [(90.0, 900.0), (100.0, 950.0)])
    assert engine.open == {} and engine.progress == {}
    assert seen(engine.tick(400)) == [("firing", 400)]
    out = engine.observe_reading("W-1", 110, {"discharge_pressure": 1200.0})
    assert [(t.kind, t.alert.rule_id, t.value) for t in out] == [("firing", 2, 1200.0)]
