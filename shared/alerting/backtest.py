"""Backtest: the alerts a rule would have raised over stored history, by the live
engine's own evaluation (evaluation.py), with nothing written or published.

History is replayed in event-time order; the engine's timer runs on a grid of
`tick_seconds` of event time between readings, as the live timer does on the wall
clock. Values in the rule's widest window before `start` warm its windows up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.alerting import store
from shared.alerting.evaluation import Device, Engine, Transition
from shared.alerting.rules import (
    CompareRule,
    DiagnosisRule,
    RateOfChangeRule,
    Rule,
    WindowRule,
)
from shared.timefmt import utc_text

RULE_ID = 0  # the rule under test needs no stored id
Reading = tuple[float, str, dict[str, float]]  # ts, device, metrics
Diagnosis = tuple[float, str, str, str, str, bool, float]  # ts, device, code, metric, ...


@dataclass
class WouldRaise:
    device_id: str
    severity: str
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        def iso(ts: float | None) -> str | None:
            return None if ts is None else utc_text(ts)
        return {"device_id": self.device_id, "severity": self.severity,
                "active_since": iso(self.active_since), "fired_at": iso(self.fired_at),
                "resolved_at": iso(self.resolved_at), "value": self.value,
                "message": self.message}


def replay(rule: Rule, devices: dict[str, Device], readings: Iterable[Reading],
           diagnoses: Iterable[Diagnosis], start: float, end: float,
           tick_seconds: float = 10.0) -> list[WouldRaise]:
    engine = Engine()
    for device_id, device in devices.items():
        engine.set_device(device_id, device, start)
    engine.set_rules({RULE_ID: rule}, start)
    raised: dict[int, WouldRaise] = {}  # by id() of the engine's OpenAlert
    order: list[WouldRaise] = []

    def record(transitions: list[Transition]) -> None:
        for t in transitions:
            if t.kind == "cancelled":
                order.remove(raised.pop(id(t.alert)))
                continue
            alert = raised.get(id(t.alert))
            if alert is None:
                alert = raised[id(t.alert)] = WouldRaise(t.alert.device_id, t.severity,
                                                         t.alert.active_since)
                order.append(alert)
            alert.severity, alert.value, alert.message = t.severity, t.value, t.message
            if t.kind == "firing":
                alert.fired_at = t.at
            elif t.kind == "resolved":
                alert.resolved_at = t.at

    events: list[tuple[float, int, Any]] = [(r[0], 0, r) for r in readings]
    events += [(d[0], 1, d) for d in diagnoses]
    events.sort(key=lambda e: (e[0], e[1]))
    clock = start
    for ts, kind, event in events:
        if ts < start:  # warm-up: windows only
            for metric, value in event[2].items() if kind == 0 else ():
                engine.prime(event[1], metric, [(ts, value)])
            continue
        if ts > end:
            break
        while clock + tick_seconds <= ts:
            clock += tick_seconds
            record(engine.tick(clock))
        if kind == 0:
            record(engine.observe_reading(event[1], ts, event[2]))
        else:
            record(engine.observe_diagnosis(event[1], event[0], *event[2:]))
    while clock + tick_seconds <= end:
        clock += tick_seconds
        record(engine.tick(clock))
    return [a for a in order if a.fired_at is not None]


def warm_up(rule: Rule) -> float:
    if isinstance(rule, WindowRule | RateOfChangeRule):
        return rule.window_seconds
    if isinstance(rule, CompareRule):
        return rule.max_age_seconds
    return 0.0


async def backtest(conn: asyncpg.Connection, rule: Rule, start: float, end: float,
                   tick_seconds: float = 10.0) -> list[dict[str, Any]]:
    """The alerts `rule` would have raised between `start` and `end` (epoch seconds)."""
    devices = {d: info for d, info in (await store.load_devices(conn)).items()
               if rule.scope.matches(d, info.device_type, info.tags)}
    if isinstance(rule, CompareRule) and rule.other_device_id is not None:
        devices.setdefault(rule.other_device_id, Device())
    readings: list[Reading] = []
    diagnoses: list[Diagnosis] = []
    if isinstance(rule, DiagnosisRule):
        rows = await conn.fetch(
            "SELECT device_id, ts, code, metric, severity, cleared, confidence FROM diagnoses "
            "WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts <= $3 ORDER BY ts, id",
            list(devices), _at(start), _at(end))
        diagnoses = [(r["ts"].timestamp(), r["device_id"], r["code"], r["metric"] or "",
                      r["severity"], r["cleared"], r["confidence"]) for r in rows]
    else:
        metrics = sorted({m for m in (getattr(rule, "metric", None),
                                      getattr(rule, "other_metric", None)) if m})
        rows = await conn.fetch(
            """
            SELECT d.device_id, m.name AS metric, t.time, t.value
            FROM telemetry t JOIN devices d ON d.id = t.device JOIN metrics m ON m.id = t.metric
            WHERE d.device_id = ANY($1::text[])
              AND ($2::text[] = '{}' OR m.name = ANY($2::text[]))
              AND t.time >= $3 AND t.time <= $4
            ORDER BY t.time
            """, list(devices), metrics, _at(start - warm_up(rule)), _at(end))
        grouped: dict[tuple[float, str], dict[str, float]] = defaultdict(dict)
        for r in rows:
            grouped[(r["time"].timestamp(), r["device_id"])][r["metric"]] = r["value"]
        readings = [(ts, device_id, values) for (ts, device_id), values in grouped.items()]
    return [a.as_dict() for a in replay(rule, devices, readings, diagnoses, start, end,
                                        tick_seconds)]


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
