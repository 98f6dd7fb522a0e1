"""Offline alert replay (`insa rules backtest FILE`): readings from a file and the diagnoses
made of them, through the live alert engine (evaluation.py) in event time, every alert
transition out. Nothing is read from or written to a database.

The caller brings the readings in event-time order and what diagnoses each one causes
(the CLI runs the diagnosis engine, as the diagnostics service does between the two
streams), so this module depends on no service. The engine's timer (pending
`for`, no data, re-notify, escalation) runs on a grid of `tick_seconds` of event time
between readings, as the live timer does on the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from shared.alerting import store
from shared.alerting.defaults import DEFAULT_RULES
from shared.alerting.evaluation import Device, Engine, Transition
from shared.alerting.rules import Rule, parse_rule
from shared.equipment import Equipment
from shared.errors import ValidationFailed
from shared.timefmt import utc_text

# The alert's state after each transition, as stored; a cancelled one was never an alert.
STATE_AFTER = {**store.STATE_AFTER, "cancelled": "cancelled"}


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One diagnosis event, as the alert engine takes it from insa:diagnostics."""

    code: str
    metric: str
    severity: str
    cleared: bool
    confidence: float
    superseded_by: str | None = None


Diagnose = Callable[[str, float, dict[str, float]], list[Diagnosis]]


def replay(rules: dict[int, Rule], readings: Iterable[tuple[str, float, dict[str, float]]],
           diagnose: Diagnose, devices: dict[str, Device] | None = None,
           tick_seconds: float = 10.0) -> Iterator[dict[str, Any]]:
    """Every alert transition, as a JSON-ready dict, in event-time order. `readings`:
    (device id, epoch seconds, canonical values), oldest first."""
    engine = Engine()
    devices = devices or {}
    names = {rule_id: rule.name for rule_id, rule in rules.items()}
    clock: float | None = None
    for device_id, ts, values in readings:
        if clock is None:
            clock = ts
            engine.set_rules(rules, ts)
        if device_id not in engine.devices:
            engine.set_device(device_id, devices.get(device_id, Device("esp")), ts)
        while clock + tick_seconds <= ts:
            clock += tick_seconds
            yield from _out(engine.tick(clock), names)
        yield from _out(engine.observe_reading(device_id, ts, values), names)
        for d in diagnose(device_id, ts, values):
            yield from _out(engine.observe_diagnosis(
                device_id, ts, d.code, d.metric, d.severity, d.cleared, d.confidence,
                d.superseded_by), names)
    if clock is not None:  # what the last reading started: one more tick settles a `for`
        yield from _out(engine.tick(clock + tick_seconds), names)


def _out(transitions: list[Transition], names: dict[int, str]) -> Iterator[dict[str, Any]]:
    for t in transitions:
        yield {"device_id": t.alert.device_id,
               "ts": utc_text(t.at),
               "rule": names[t.alert.rule_id], "rule_id": t.alert.rule_id,
               "event": t.kind, "state": STATE_AFTER[t.kind], "severity": t.severity,
               "value": t.value, "threshold": t.threshold or None, "message": t.message,
               "note": t.note}


def load_rules(data: bytes | None) -> dict[int, Rule]:
    """The rules to replay: a JSON array of rule definitions (as `POST /rules` takes), or
    the built-in set when None. Raises ValueError naming the rule that is wrong."""
    definitions = DEFAULT_RULES if data is None else orjson.loads(data)
    if not isinstance(definitions, list):
        raise ValueError("a JSON array of rules is expected")
    rules: dict[int, Rule] = {}
    for n, definition in enumerate(definitions, start=1):
        try:
            rules[n] = parse_rule(definition)
        except ValidationFailed as exc:
            raise ValueError(f"rule {n}: {exc.message}") from None
    return rules


def load_devices(data: bytes) -> dict[str, Device]:
    """What scopes match and limits come from, per device: {"W-1": {"device_type": "esp",
    "tags": ["north"], "attributes": {"motor_rated_current": 46}}} (`insa simulate-file`
    writes one for its wells). Raises ValueError naming what is wrong."""
    found = orjson.loads(data)
    if not isinstance(found, dict):
        raise ValueError("a JSON object of devices is expected")
    devices = {}
    for device_id, given in found.items():
        if not isinstance(given, dict):
            raise ValueError(f"{device_id}: an object is expected")
        tags = given.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{device_id}.tags: a list of strings is expected")
        device_type = given.get("device_type", "esp")
        if not isinstance(device_type, str):
            raise ValueError(f"{device_id}.device_type: a string is expected")
        try:
            equipment = Equipment.model_validate(given.get("attributes", {}))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in error["loc"])
            raise ValueError(f"{device_id}.attributes.{where}: {error['msg']}") from None
        devices[device_id] = Device(device_type, frozenset(tags), equipment.known())
    return devices
