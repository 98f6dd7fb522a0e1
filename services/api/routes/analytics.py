"""ESP analytics: a well's hourly or daily summary, its performance and health against its
own baseline, the fleet at a glance, and wells ranked. Definitions: services/api/analytics.py
and docs/api-analytics.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from services.api import analytics as a
from services.api import telemetry_queries as q
from services.api.deps import Res, require
from services.api.security.principal import Principal
from shared.contract import CRITICAL, Raised
from shared.errors import ValidationFailed

router = APIRouter(prefix="/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("telemetry:read"))]
WindowHours = Annotated[int, Query(ge=1, le=168, description="The window: whole hours up "
                                   "to end; the baseline is the 7 days before it")]
Start = Annotated[AwareDatetime | None, Query(description="Inclusive, ISO 8601 with zone")]
End = Annotated[AwareDatetime | None, Query(description="Exclusive end; default now")]
DeviceType = Annotated[str | None, Query(examples=["esp"])]
Tag = Annotated[str | None, Query(description="A tag in the device's metadata.tags")]
PERIODS = {"hourly": (timedelta(hours=1), timedelta(days=1), timedelta(days=31)),
           "daily": (timedelta(days=1), timedelta(days=7), timedelta(days=92))}
SUMMARY_METRICS = ("flow_rate", "pip", "motor_current", "motor_temp", "vibration",
                   "vsd_frequency", "discharge_pressure")
PRODUCING_MIN_BBL_D = 1.0


class SummaryBucket(BaseModel):
    bucket: datetime = Field(description="Start of the hour or day (UTC)")
    flow_rate: float | None = Field(None, description="Mean, bbl/d", examples=[2480.2])
    pip: float | None = Field(None, description="Mean, psi")
    motor_current: float | None = Field(None, description="Mean, A")
    motor_temp: float | None = Field(None, description="Mean, degC")
    motor_temp_max: float | None = None
    vibration: float | None = Field(None, description="Mean, mm/s")
    vibration_max: float | None = None
    vsd_frequency: float | None = Field(None, description="Mean, Hz")
    discharge_pressure: float | None = Field(None, description="Mean, psi")
    run_fraction: float | None = Field(None, description="Share of the minutes with current "
                                       "data that the pump ran throughout", examples=[0.98])
    runtime_hours: float | None = Field(None, description="Run fraction x the part of the "
                                        "bucket inside [start, min(end, now)), hours")
    flow_per_amp: float | None = Field(None, description="bbl/d per A over running minutes")
    volume_bbl: float | None = Field(None, description="Estimate: mean flow x the part of "
                                     "the bucket inside [start, min(end, now))")


class Summary(BaseModel):
    device_id: str
    period: Literal["hourly", "daily"]
    start: datetime
    end: datetime
    source: Literal["rollup_1m"] = "rollup_1m"
    buckets: list[SummaryBucket]


class Issue(BaseModel):
    kind: Literal["diagnosis", "alert"]
    name: str = Field(examples=["gas_lock"])
    severity: Raised


class Performance(BaseModel):
    device_id: str
    start: datetime
    end: datetime
    baseline_start: datetime
    hours: int = Field(description="Hours of the window with motor current data")
    running_hours: int
    run_fraction: float | None
    flow_rate: float | None = Field(description="Means over running hours, canonical units")
    motor_current: float | None
    motor_temp: float | None
    vibration: float | None
    efficiency: float | None = Field(description="Flow per amp, bbl/d per A", examples=[48.2])
    efficiency_change: float | None = Field(description="Efficiency / baseline - 1",
                                            examples=[-0.08])
    baseline: dict[str, float | None] = Field(description="Medians of hourly values over the "
                                              "7 days before the window; empty when fewer "
                                              "than 24 running hours")
    baseline_hours: int
    health: float | None = Field(description="0-100; null when the pump did not run",
                                 examples=[82.5])
    health_penalties: dict[str, float]
    open_issues: list[Issue]


class Fleet(BaseModel):
    devices: int
    online: int
    offline: int
    unknown: int
    producing: int = Field(description="Online, latest flow_rate ≥ 1 bbl/d")
    total_flow_bbl_d: float = Field(description="Sum of the producing wells' latest flow")
    wells_with_critical_alerts: int
    wells_with_critical_diagnoses: int
    average_health: float | None = Field(description="Mean over wells with a score")
    health_scored: int
    window_hours: int


class Ranked(BaseModel):
    rank: int
    device_id: str
    efficiency: float | None
    efficiency_baseline: float | None
    health: float | None
    run_fraction: float | None


SCOPE = """SELECT id, device_id, device_type FROM devices
            WHERE ($1::text IS NULL OR device_type = $1)
              AND ($2::text IS NULL OR metadata -> 'tags' ? $2)
              AND ($3::text IS NULL OR device_id = $3) ORDER BY device_id"""

# Minutes of telemetry_1m pivoted per metric, then grouped into hours or days: means
# weighted by counts (exactly the raw mean), running minutes, and flow per amp.
# $1 device, $2 ids (of SUMMARY_METRICS, in order; NULL when not catalogued),
# $3 start, $4 end, $5 width, $6 origin, $7 running current.
_PIVOT = ",\n".join(
    f"sum(avg * count) FILTER (WHERE metric = ($2::smallint[])[{i}]) AS s{i}, "
    f"sum(count) FILTER (WHERE metric = ($2::smallint[])[{i}]) AS n{i}"
    for i in range(1, len(SUMMARY_METRICS) + 1))
SUMMARY = f"""
WITH p AS (
    SELECT bucket, {_PIVOT},
           min(min) FILTER (WHERE metric = ($2::smallint[])[3]) AS cur_min,
           max(max) FILTER (WHERE metric = ($2::smallint[])[4]) AS temp_max,
           max(max) FILTER (WHERE metric = ($2::smallint[])[5]) AS vib_max
      FROM telemetry_1m
     WHERE device = $1 AND metric = ANY($2) AND bucket >= $3 AND bucket < $4
     GROUP BY bucket)
SELECT date_bin($5::interval, bucket, $6) AS b,
       {", ".join(f"sum(s{i}) / nullif(sum(n{i}), 0) AS m{i}"
                  for i in range(1, len(SUMMARY_METRICS) + 1))},
       max(temp_max) AS temp_max, max(vib_max) AS vib_max,
       count(*) FILTER (WHERE n3 > 0) AS minutes,
       count(*) FILTER (WHERE cur_min >= $7) AS running,
       sum(s1 / n1) FILTER (WHERE cur_min >= $7 AND n1 > 0) /
           nullif(sum(s3 / n3) FILTER (WHERE cur_min >= $7 AND n1 > 0), 0) AS per_amp
  FROM p GROUP BY 1 ORDER BY 1"""


@router.get("/wells/{device_id}/summary", response_model=Summary, responses={404: {}},
            summary="A well's hourly or daily summary")
async def summary(device_id: str, res: Res, who: Reader,
                  period: Literal["hourly", "daily"] = "hourly",
                  start: Start = None, end: End = None) -> Summary:
    """Per hour or UTC day, from the per-minute rollup: metric means (exact means of the
    readings), maxima of temperature and vibration, the run fraction (the share of minutes
    with current data whose lowest current is at least the well's running current, 6 A
    unless its diagnosis limits say otherwise: sampling-rate independent),
    runtime, flow per amp over running minutes, and an estimated volume. Default range:
    the last day (hourly) or week (daily), on whole buckets; at most 31 or 92 days."""
    width, default, longest = PERIODS[period]
    now = datetime.now(UTC)
    begin, until = q.window(start, end, default)
    if start is None:  # whole hours or days
        try:
            begin = q.ORIGIN + (begin - q.ORIGIN) // width * width
        except OverflowError:
            raise ValidationFailed("bad_time", "end: out of range", field="end") from None
    if until - begin > longest:
        raise ValidationFailed("range_too_long", f"end: at most {longest.days} days for "
                                 f"{period}", field="end")
    dev = await q.device(res.pool, who, device_id)
    [limits] = await a.well_limits(res.pool, [(dev.device_id, dev.device_type)])
    ids = await a.metric_ids(res.pool, SUMMARY_METRICS)
    rows = await res.pool.fetch(SUMMARY, dev.id, list(ids.values()), begin, until, width,
                                q.ORIGIN, a.running_min_current(limits))
    buckets = []
    for r in rows:
        means = {name: r[f"m{i}"] for i, name in enumerate(SUMMARY_METRICS, start=1)}
        span = max(min(r["b"] + width, until, now) - max(r["b"], begin), timedelta(0))
        flow = means["flow_rate"]
        run = r["running"] / r["minutes"] if r["minutes"] else None
        buckets.append(SummaryBucket(
            bucket=r["b"], **means, motor_temp_max=r["temp_max"], vibration_max=r["vib_max"],
            run_fraction=run, flow_per_amp=r["per_amp"],
            runtime_hours=run * (span / timedelta(hours=1)) if run is not None else None,
            volume_bbl=flow * (span / timedelta(days=1)) if flow is not None else None))
    return Summary(device_id=dev.device_id, period=period, start=begin, end=until,
                   buckets=buckets)


@router.get("/wells/{device_id}/performance", response_model=Performance, responses={404: {}},
            summary="A well's efficiency (flow per amp) and health score")
async def performance(device_id: str, res: Res, who: Reader, window_hours: WindowHours = 24,
                      end: End = None) -> Performance:
    """Flow per amp over the window and the health score (0-100), both against the well's
    own 7-day baseline and judged by its diagnosis limits (overrides included); the
    score's parts are given, so it can be read. Definition: docs/api-analytics.md."""
    until = until_of(end)
    base_start, start, stop = a.window_bounds(until, window_hours)
    dev = await q.device(res.pool, who, device_id)
    [limits] = await a.well_limits(res.pool, [(dev.device_id, dev.device_type)])
    stats = (await a.well_stats(res.pool, {dev.id: limits}, until, window_hours))[dev.id]
    issues = (await a.open_issues(res.pool, [dev.device_id]))[dev.device_id]
    scored = a.health(stats, [i["severity"] for i in issues], limits)
    base = stats.base if stats.has_baseline else {}
    base_eff = base.get("efficiency")
    return Performance(
        device_id=dev.device_id, start=start, end=stop, baseline_start=base_start,
        hours=stats.hours, running_hours=stats.running_hours, run_fraction=stats.run_fraction,
        flow_rate=stats.flow_rate, motor_current=stats.motor_current,
        motor_temp=stats.motor_temp, vibration=stats.vibration, efficiency=stats.efficiency,
        efficiency_change=stats.efficiency / base_eff - 1
        if stats.efficiency is not None and base_eff else None,
        baseline=base, baseline_hours=stats.base_hours, health=scored.score,
        health_penalties=scored.components, open_issues=[Issue(**i) for i in issues])


def until_of(end: datetime | None) -> datetime:
    return q.utc(end, "end") if end else datetime.now(UTC)


@router.get("/fleet", response_model=Fleet, summary="The fleet at a glance")
async def fleet(res: Res, who: Reader, device_type: DeviceType = None, tag: Tag = None,
                window_hours: WindowHours = 24, end: End = None) -> Fleet:
    """Devices by status, wells producing now (online with a latest flow ≥ 1 bbl/d) and
    their total flow, wells with an open critical alert or diagnosis, and the mean health
    score over the window."""
    scope = await res.pool.fetch(SCOPE, device_type, tag, who.device_id)
    ids = [r["id"] for r in scope]
    names = [r["device_id"] for r in scope]
    flow_id = (await a.metric_ids(res.pool, ["flow_rate"]))["flow_rate"]
    counts = await res.pool.fetchrow(
        """SELECT count(*) AS devices,
                  count(*) FILTER (WHERE d.status = 'online') AS online,
                  count(*) FILTER (WHERE d.status = 'offline') AS offline,
                  count(*) FILTER (WHERE d.status = 'online' AND l.value >= $3) AS producing,
                  coalesce(sum(l.value) FILTER (WHERE d.status = 'online' AND l.value >= $3),
                           0) AS total_flow
             FROM devices d LEFT JOIN telemetry_latest l ON l.device = d.id AND l.metric = $2
            WHERE d.id = ANY($1)""", ids, flow_id, PRODUCING_MIN_BBL_D)
    issues = await a.open_issues(res.pool, names)
    critical = {kind: sum(any(i["kind"] == kind and i["severity"] == CRITICAL for i in found)
                          for found in issues.values()) for kind in ("alert", "diagnosis")}
    scores = await a.scores(res.pool, scope, until_of(end), window_hours, issues)
    scored = [s["health"] for s in scores if s["health"] is not None]
    average = a.mean(scored)
    return Fleet(devices=counts["devices"], online=counts["online"],
                 offline=counts["offline"],
                 unknown=counts["devices"] - counts["online"] - counts["offline"],
                 producing=counts["producing"], total_flow_bbl_d=counts["total_flow"],
                 wells_with_critical_alerts=critical["alert"],
                 wells_with_critical_diagnoses=critical["diagnosis"],
                 average_health=round(average, 1) if average is not None else None,
                 health_scored=len(scored), window_hours=window_hours)


@router.get("/rankings", response_model=list[Ranked], summary="Wells ranked")
async def rankings(res: Res, who: Reader, by: Literal["efficiency", "health"] = "health",
                   order: Literal["desc", "asc"] = "desc",
                   limit: Annotated[int, Query(ge=1, le=1000)] = 10,
                   device_type: DeviceType = None, tag: Tag = None,
                   window_hours: WindowHours = 24, end: End = None) -> list[Ranked]:
    """Wells by efficiency (flow per amp) or health over the window, best first (`desc`)
    or worst first (`asc`); wells without a value (not running) are left out."""
    scope = await res.pool.fetch(SCOPE, device_type, tag, who.device_id)
    issues = await a.open_issues(res.pool, [r["device_id"] for r in scope])
    scores = [s for s in await a.scores(res.pool, scope, until_of(end), window_hours, issues)
              if s[by] is not None]
    scores.sort(key=lambda s: (-s[by] if order == "desc" else s[by], s["device_id"]))
    return [Ranked(rank=n, **s) for n, s in enumerate(scores[:limit], start=1)]
