"""The rules page's form inputs: which ones each rule type has, and which of them shows
an error the API names by a field's path.

An input is named after the field of the rule body it sets (`metric`, `value`, `scope`;
a limit's parts `value.kind`, `value.factor`), so the API's message for that field
(`op: Input should be …`) is shown at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.contract import SEVERITIES
from shared.diagnosis.catalog import DIAGNOSIS_CODES
from shared.equipment import ATTRIBUTES

OPS = (">", ">=", "<", "<=", "==", "!=")


@dataclass(frozen=True)
class Input:
    """One input of the form. `kind` decides how it is shown and read: text, area, number,
    select, check (a bool), scope (all devices, or a device, type or tag), or limit (a number,
    an equipment attribute or the well's own normal: `limits` are the forms allowed; ""
    among them: left out)."""

    name: str
    label: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    hint: str = ""
    limits: tuple[str, ...] = ()
    otherwise: bool = False  # an attribute limit that may fall back to the well's normal
    placeholder: str = ""  # a number's default


def _metric(hint: str = "a metric name, canonical units (docs/payloads.md)") -> Input:
    return Input("metric", "Metric", hint=hint)


OP = Input("op", "Compared", "select", OPS)
WINDOW = Input("window_seconds", "Window (s)", "number", hint="more than 0, at most 7 days")
WHILE_RUNNING = Input("while_running", "Only while running", "check",
                      hint="a reading of 0 (a stopped pump) is not judged")
COMMON = (
    Input("name", "Name"),
    Input("severity", "Severity", "select", SEVERITIES),
    Input("scope", "Scope", "scope", hint="one device, a device type, a tag, or all devices"),
    Input("for_seconds", "For (s)", "number", placeholder="0",
          hint="how long the condition must hold before the alert fires; 0: at once"),
    Input("message", "Message", hint="fields: {rule} {device_id} {metric} {value} "
                                     "{threshold} {severity} {state}; empty: the default"),
    Input("description", "Description", "area"),
)
ENABLED = Input("enabled", "Enabled", "check")
TYPE_INPUTS: dict[str, tuple[Input, ...]] = {
    "threshold": (_metric(), OP, Input("value", "Limit", "limit",
                                       limits=("number", "attribute", "baseline"),
                                       otherwise=True), WHILE_RUNNING),
    "range": (_metric(),
              Input("low", "Low", "limit", limits=("number", "attribute")),
              Input("high", "High", "limit", limits=("number", "attribute")),
              Input("clear_low", "Clears above", "limit", limits=("", "number", "attribute"),
                    hint="same as low"),
              Input("clear_high", "Clears below", "limit", limits=("", "number", "attribute"),
                    hint="same as high"), WHILE_RUNNING),
    "rate_of_change": (_metric(), WINDOW,
                       Input("per_seconds", "Per (s)", "number", placeholder="60"), OP,
                       Input("value", "Change", "number")),
    "window": (_metric(), Input("stat", "Statistic", "select",
                                ("avg", "min", "max", "stddev", "count")), WINDOW, OP,
               Input("value", "Value", "number")),
    "compare": (_metric(), OP,
                Input("other_metric", "Other metric", hint="empty: the same metric"),
                Input("other_device_id", "Other device",
                      hint="empty: this device; needs a scope of one device"),
                Input("offset", "Offset", "number", placeholder="0"),
                Input("max_age_seconds", "Max age (s)", "number", placeholder="300",
                      hint="the other value is used while this fresh")),
    "no_data": (_metric("empty: any metric (the device is silent)"),
                Input("after_seconds", "Silent for (s)", "number")),
    "diagnosis": (Input("code", "Diagnosis code", "select", (*DIAGNOSIS_CODES, "*")),
                  Input("min_severity", "At least", "select", SEVERITIES)),
}
LIMIT_KINDS = {"": "default", "number": "a number", "attribute": "an equipment attribute",
               "baseline": "the well's own normal"}
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)


def inputs_of(rule_type: str, creating: bool = False) -> tuple[Input, ...]:
    return (*COMMON, *((ENABLED,) if creating else ()), *TYPE_INPUTS.get(rule_type, ()))


def input_for(field: str | None, message: str, rule_type: str, body: Mapping[str, Any],
              creating: bool = False) -> str:
    """Which input shows an error the API named `field` (`value.float`, `scope.device_id`,
    `actions.0.webhook.url`): the input whose name is the longest prefix of it; a field of
    the `extra` object there; "rule" (the form's top) for the rule as a whole, unless
    its message starts with a field's name ("rule: low must be below high")."""
    names = {s.name for s in inputs_of(rule_type, creating)} | {"type"}
    if field in (None, "rule"):
        field = message.removeprefix("rule: ").split(" ", 1)[0].strip("`")
    parts = (field or "").split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in names:
            return ".".join(parts[:n])
    return "extra" if parts[0] in body else "rule"
