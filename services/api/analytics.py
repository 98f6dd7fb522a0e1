"""ESP well analytics: per-well statistics from the rollups, judged against the well's own
baseline, and the health score (docs/api-analytics.md).

**Thresholds** are the diagnosis engine's limits (shared/diagnosis/limits.py), the well's
effective ones: the defaults with the `diagnosis_limits` overrides for its type and for
itself merged in (`LimitBook.for_device`), as the diagnostics judge it. The numbers
below are the defaults'.

**Running.** An hour (or minute) counts as running when the lowest motor current sampled
in it is at least `running_min_current` (6 A: the diagnostics' `running_min_current_ratio`,
15 %, of the low end of the normal motor current range, 40 A): the pump ran the whole of
it. Stopped time is left out of every figure below except the run fraction: a planned
stop is not a sick pump.

**Efficiency** is flow per amp, bbl/d per A: the window's mean flow over its mean motor
current, on running hours that have both. At a fixed speed a pump that wears (stage wear,
scale, recirculation) or takes in gas moves less fluid for the same current, so a fall
of flow per amp against the well's own past is the earliest sign of lost hydraulic
efficiency. (It is not normalised for VSD speed: flow ∝ f but current ≈ f^1.5, so a
planned speed-up lowers it somewhat. Read a change with the VSD history.)

**Baseline**: the medians of hourly values over the 7 days before the window (running
hours only; medians, so a fault inside them does not move them much); it counts only with
at least `BASELINE_MIN_HOURS` running hours.

**Health** (0-100) = 100 minus five penalties, each growing linearly from an onset to its
full value (`ramp`), the total floored at 0 (table and reasons: docs/api-analytics.md):

- efficiency (up to 30): flow per amp 5 % to 30 % below baseline. Lost hydraulic
  efficiency: stage wear, gas interference, scale.
- vibration (up to 20): 1.25 to 3.5 times baseline (3.5: rules.bearing_wear.critical_ratio);
  or, where the well normally sits under the critical high of ranges.vibration (3.0
  mm/s), from it to 1.5 times it (4.5 mm/s), whichever is worse. Bearing and shaft wear,
  sand, cavitation.
- motor_temp (up to 20): 5 to 20 degC over baseline (20: rules.overheating.critical_rise).
  Insulation life halves for each ~10 degC (Montsinger's rule); a hotter motor also
  means less cooling flow past it.
- motor_current (up to 15): 5 % to 30 % over baseline (1.30: rules.overload.critical_ratio;
  overload heats the motor, I^2 R), or 5 % to 40 % under it (0.60:
  rules.underload.critical_ratio; lost fluid, gas, a broken shaft).
- open_issues: 10 for any open warning diagnosis or firing/acknowledged alert, 25 for
  any critical one.

Where a full value falls at or below its onset (an override), the penalty is all or
nothing at the full value. Without a baseline (a new well) vibration and temperature are
judged against the high ends of their normal ranges (1.5 mm/s, 90 °C); current and
efficiency are then not judged. A well that did not run in the window has no efficiency
and no health score (`null`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.contract import CRITICAL, RAISED, WARNING
from shared.diagnosis import repository
from shared.diagnosis.limits import DEFAULT_LIMITS
from shared.errors import ValidationFailed

BASELINE_DAYS = 7
BASELINE_MIN_HOURS = 24
METRICS = ("flow_rate", "motor_current", "motor_temp", "vibration")
CRITICAL_PENALTY, WARNING_PENALTY = 25.0, 10.0
# One device's limits, as LimitBook.for_device resolves them (the shape of DEFAULT_LIMITS).
Limits = Mapping[str, Any]


def running_min_current(limits: Limits = DEFAULT_LIMITS) -> float:
    """The lowest current, A, of a pump that runs: the diagnostics' running share of the
    low end of the normal motor current range (the default range's where it has none)."""
    low = limits["ranges"]["motor_current"]["normal"][0]
    if low is None:
        low = DEFAULT_LIMITS["ranges"]["motor_current"]["normal"][0]
    return float(limits["operation"]["running_min_current_ratio"] * low)


async def well_limits(conn: asyncpg.Pool | asyncpg.Connection,
                      wells: Sequence[tuple[str, str | None]]) -> list[Limits]:
    """Each (device id, device type)'s effective limits, as the diagnostics judge it."""
    book = await repository.limit_book(conn)
    return [book.for_device(device_id, device_type) for device_id, device_type in wells]


def ramp(value: float, onset: float, full: float) -> float:
    """0 at or before onset, 1 at or past full, linear between (a step at full when full
    is not past onset)."""
    if full <= onset:
        return 1.0 if value >= full else 0.0
    return min(1.0, max(0.0, (value - onset) / (full - onset)))


@dataclass
class WellStats:
    """One well over a window, and its baseline (None where there was no data)."""
    device: int
    hours: int = 0                 # hours with motor current data in the window
    running_hours: int = 0
    flow_rate: float | None = None  # window means over running hours
    motor_current: float | None = None
    motor_temp: float | None = None
    vibration: float | None = None
    efficiency: float | None = None
    base_hours: int = 0
    base: dict[str, float | None] = field(default_factory=dict)  # medians, same keys

    @property
    def run_fraction(self) -> float | None:
        return self.running_hours / self.hours if self.hours else None

    @property
    def has_baseline(self) -> bool:
        return self.base_hours >= BASELINE_MIN_HOURS


@dataclass
class Health:
    score: float | None
    components: dict[str, float]


def health(stats: WellStats, severities: Sequence[str] = (),
           limits: Limits = DEFAULT_LIMITS) -> Health:
    """The score of the module docstring; `severities` of the well's open diagnoses and
    alerts (warning or critical); `limits` the well's (`well_limits`)."""
    issues = CRITICAL_PENALTY if CRITICAL in severities else \
        WARNING_PENALTY if WARNING in severities else 0.0
    parts = {"efficiency": 0.0, "vibration": 0.0, "motor_temp": 0.0, "motor_current": 0.0,
             "open_issues": issues}
    if stats.running_hours == 0:
        return Health(None, parts)
    base = stats.base if stats.has_baseline else {}
    ranges, rules = limits["ranges"], limits["rules"]
    if stats.efficiency is not None and base.get("efficiency"):
        decline = 1 - stats.efficiency / base["efficiency"]  # type: ignore[operator]
        parts["efficiency"] = 30 * ramp(decline, 0.05, 0.30)
    if stats.vibration is not None:
        normal = base.get("vibration") or ranges["vibration"]["normal"][1]
        critical = ranges["vibration"]["critical"][1]
        relative = ramp(stats.vibration / normal, 1.25, rules["bearing_wear"]["critical_ratio"]
                        ) if normal else 0.0
        absolute = ramp(stats.vibration, critical, 1.5 * critical) \
            if critical is not None and (normal is None or normal < critical) else 0.0
        parts["vibration"] = 20 * max(relative, absolute)
    if stats.motor_temp is not None:
        normal = base.get("motor_temp") or ranges["motor_temp"]["normal"][1]
        if normal is not None:
            parts["motor_temp"] = 20 * ramp(stats.motor_temp - normal, 5.0,
                                            rules["overheating"]["critical_rise"])
    if stats.motor_current is not None and base.get("motor_current"):
        ratio = stats.motor_current / base["motor_current"]  # type: ignore[operator]
        parts["motor_current"] = 15 * max(
            ramp(ratio, 1.05, rules["overload"]["critical_ratio"]),
            ramp(-ratio, -0.95, -rules["underload"]["critical_ratio"]))
    parts = {k: round(v, 2) for k, v in parts.items()}
    return Health(round(max(0.0, 100 - sum(parts.values())), 1), parts)


# --- queries -------------------------------------------------------------------------------


async def metric_ids(conn: asyncpg.Pool | asyncpg.Connection, names: Sequence[str]
                     ) -> dict[str, int | None]:
    rows = await conn.fetch("SELECT name, id FROM metrics WHERE name = ANY($1)", list(names))
    found = {r["name"]: r["id"] for r in rows}
    return {n: found.get(n) for n in names}


# Per well and hour (telemetry_1h): each metric's sum and count, and the lowest current;
# then per well the window's means over running hours and the baseline's hourly medians.
# $1 device ids, $2-$5 ids of flow_rate, motor_current, motor_temp, vibration (NULL when
# not catalogued), $6 baseline start, $7 window start, $8 end, $9 each device's running
# current (in the order of $1).
STATS = """
WITH p AS (
    SELECT device, bucket,
           sum(avg * count) FILTER (WHERE metric = $2) AS flow_s,
           sum(count) FILTER (WHERE metric = $2) AS flow_n,
           sum(avg * count) FILTER (WHERE metric = $3) AS cur_s,
           sum(count) FILTER (WHERE metric = $3) AS cur_n,
           min(min) FILTER (WHERE metric = $3) AS cur_min,
           sum(avg * count) FILTER (WHERE metric = $4) AS temp_s,
           sum(count) FILTER (WHERE metric = $4) AS temp_n,
           sum(avg * count) FILTER (WHERE metric = $5) AS vib_s,
           sum(count) FILTER (WHERE metric = $5) AS vib_n
      FROM telemetry_1h
     WHERE device = ANY($1::int[]) AND metric = ANY(ARRAY[$2, $3, $4, $5]::smallint[])
       AND bucket >= $6 AND bucket < $8
     GROUP BY device, bucket),
h AS (
    SELECT p.*, bucket >= $7 AS recent, coalesce(cur_min >= w.running_a, false) AS running,
           flow_s / nullif(flow_n, 0) AS flow, cur_s / nullif(cur_n, 0) AS cur,
           temp_s / nullif(temp_n, 0) AS temp, vib_s / nullif(vib_n, 0) AS vib
      FROM p JOIN unnest($1::int[], $9::float8[]) AS w(device, running_a) USING (device))
SELECT device,
       count(*) FILTER (WHERE recent AND cur_n > 0) AS hours,
       count(*) FILTER (WHERE recent AND running) AS running_hours,
       sum(flow_s) FILTER (WHERE recent AND running) /
           nullif(sum(flow_n) FILTER (WHERE recent AND running), 0) AS flow_rate,
       sum(cur_s) FILTER (WHERE recent AND running) /
           nullif(sum(cur_n) FILTER (WHERE recent AND running), 0) AS motor_current,
       sum(temp_s) FILTER (WHERE recent AND running) /
           nullif(sum(temp_n) FILTER (WHERE recent AND running), 0) AS motor_temp,
       sum(vib_s) FILTER (WHERE recent AND running) /
           nullif(sum(vib_n) FILTER (WHERE recent AND running), 0) AS vibration,
       (sum(flow_s) FILTER (WHERE recent AND running AND cur_n > 0) /
           nullif(sum(flow_n) FILTER (WHERE recent AND running AND cur_n > 0), 0)) /
       nullif(sum(cur_s) FILTER (WHERE recent AND running AND flow_n > 0) /
           nullif(sum(cur_n) FILTER (WHERE recent AND running AND flow_n > 0), 0), 0)
           AS efficiency,
       count(*) FILTER (WHERE NOT recent AND running) AS base_hours,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY flow / nullif(cur, 0))
           FILTER (WHERE NOT recent AND running) AS base_efficiency,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY cur)
           FILTER (WHERE NOT recent AND running) AS base_motor_current,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY temp)
           FILTER (WHERE NOT recent AND running) AS base_motor_temp,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY vib)
           FILTER (WHERE NOT recent AND running) AS base_vibration
  FROM h GROUP BY device"""


def window_bounds(end: datetime, hours: int) -> tuple[datetime, datetime, datetime]:
    """(baseline start, window start, end) on whole hours: end is rounded up, so the hour
    in progress counts."""
    try:
        floored = end.replace(minute=0, second=0, microsecond=0)
        end = floored if floored == end else floored + timedelta(hours=1)
        start = end - timedelta(hours=hours)
        return start - timedelta(days=BASELINE_DAYS), start, end
    except OverflowError:
        raise ValidationFailed("bad_time", "end: out of range", field="end") from None


async def well_stats(conn: asyncpg.Pool | asyncpg.Connection, devices: Mapping[int, Limits],
                     end: datetime, hours: int) -> dict[int, WellStats]:
    """Per device (devices.id, with its limits: `well_limits`) over the window."""
    if not devices:
        return {}
    ids = await metric_ids(conn, METRICS)
    rows = await conn.fetch(STATS, list(devices), *ids.values(), *window_bounds(end, hours),
                            [running_min_current(limits) for limits in devices.values()])
    found = {d: WellStats(d) for d in devices}
    for r in rows:
        s = found[r["device"]]
        s.hours, s.running_hours, s.base_hours = r["hours"], r["running_hours"], r["base_hours"]
        s.flow_rate, s.motor_current = r["flow_rate"], r["motor_current"]
        s.motor_temp, s.vibration, s.efficiency = r["motor_temp"], r["vibration"], r["efficiency"]
        s.base = {k: r[f"base_{k}"] for k in ("efficiency", "motor_current", "motor_temp",
                                              "vibration")}
    return found


# $1 device ids, $2 the raised severities (warning, critical).
ISSUES = """
SELECT device_id, 'diagnosis' AS kind, code AS name, severity FROM open_diagnoses
 WHERE device_id = ANY($1) AND severity = ANY($2::text[])
UNION ALL
SELECT a.device_id, 'alert', r.name, a.severity FROM alerts a JOIN rules r ON r.id = a.rule_id
 WHERE a.device_id = ANY($1) AND a.state IN ('firing', 'acknowledged')
   AND a.severity = ANY($2::text[])
 ORDER BY 1, 4, 3"""


async def open_issues(conn: asyncpg.Pool | asyncpg.Connection, device_ids: Sequence[str]
                      ) -> dict[str, list[dict[str, Any]]]:
    """Open warning and critical diagnoses and firing or acknowledged alerts per well."""
    found: dict[str, list[dict[str, Any]]] = {d: [] for d in device_ids}
    for r in await conn.fetch(ISSUES, list(device_ids), list(RAISED)):
        found[r["device_id"]].append({"kind": r["kind"], "name": r["name"],
                                      "severity": r["severity"]})
    return found


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


async def scores(conn: asyncpg.Pool | asyncpg.Connection, scope: Sequence[asyncpg.Record],
                 until: datetime, hours: int, issues: Mapping[str, list[dict[str, Any]]]
                 ) -> list[dict[str, Any]]:
    """Efficiency, run fraction and health over the window of each well of `scope` (rows
    with id, device_id, device_type), given its open issues."""
    window_bounds(until, hours)  # 422 for an end out of range, even with no wells
    limits = dict(zip((r["id"] for r in scope), await well_limits(
        conn, [(r["device_id"], r["device_type"]) for r in scope]), strict=True))
    stats = await well_stats(conn, limits, until, hours)
    found = []
    for r in scope:
        s = stats[r["id"]]
        base = s.base.get("efficiency") if s.has_baseline else None
        found.append({"device_id": r["device_id"], "efficiency": s.efficiency,
                      "efficiency_baseline": base, "run_fraction": s.run_fraction,
                      "health": health(s, [i["severity"] for i in issues[r["device_id"]]],
                                       limits[r["id"]]).score})
    return found
