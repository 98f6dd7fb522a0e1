"""Driving the pure alert engine in tests: rules, an engine holding them, and the
transitions it makes as (kind, time) pairs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.alerting.evaluation import Device, Engine, Transition
from shared.alerting.rules import Rule, parse_rule

Point = tuple[float, float]
Seen = list[tuple[str, float]]


def rule(**fields: Any) -> Rule:
    return parse_rule({"name": "r", **fields})


def hot(**fields: Any) -> Rule:
    """motor_temp > 150 degC"""
    return rule(**{"type": "threshold", "metric": "motor_temp", "op": ">", "value": 150.0,
                   **fields})


def engine_with(*rules: Rule, devices: dict[str, Device] | None = None) -> Engine:
    engine = Engine()
    for device_id, device in (devices or {}).items():
        engine.set_device(device_id, device, 0.0)
    assert engine.set_rules(dict(enumerate(rules, start=1)), 0.0) == []
    return engine


def seen(transitions: Iterable[Transition]) -> Seen:
    return [(t.kind, t.at) for t in transitions]


def feed(engine: Engine, metric: str, points: Iterable[Point], device: str = "W-1") -> Seen:
    out: list[Transition] = []
    for ts, value in points:
        out += engine.observe_reading(device, ts, {metric: value})
    return seen(out)


def series(*values: float, start: float = 0.0, step: float = 10.0) -> list[Point]:
    return [(start + i * step, v) for i, v in enumerate(values)]


def ticks(engine: Engine, times: Iterable[float]) -> Seen:
    out: list[Transition] = []
    for now in times:
        out += engine.tick(now)
    return seen(out)


def diagnose(engine: Engine, ts: float, code: str, severity: str = "warning", *,
             cleared: bool = False, confidence: float = 0.9, metric: str = "pip",
             device: str = "W-1") -> Seen:
    return seen(engine.observe_diagnosis(device, ts, code, metric, severity, cleared,
                                         confidence))


def no_head(**fields: Any) -> Rule:
    """discharge pressure < pip + 300 psi: the pump lifts next to nothing."""
    return rule(**{"type": "compare", "metric": "discharge_pressure", "op": "<",
                   "other_metric": "pip", "offset": 300.0, "max_age_seconds": 60, **fields})
