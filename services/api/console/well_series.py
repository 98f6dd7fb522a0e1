"""A well's trend charts' data: per metric never more points than the chart is pixels wide.

Buckets of avg, min and max (the band) whose width is the smallest of STEPS that fits,
from the coarsest source that answers exactly (telemetry_queries.source_for): the
hourly rollup for whole hours, the per-minute one for whole minutes, the raw rows for
seconds. For a rollup the range is widened to its grid (at most a minute or an hour at
each end), so both ends fall on it. The buckets' counts say how many readings the range
holds: a metric with no more of them than pixels is drawn from its raw readings instead
(one more index range scan). A 30-day chart of a well reading once a minute is about
720 hourly buckets: one index range scan of telemetry_1h per metric, and no raw rows.

Bucket count: date_bin buckets meeting [start, end) number at most ceil(span / width) + 1
(the range need not start on a bucket), and a missing bucket adds at most one null (the
chart's gap), so the points per metric stay within the budget either way.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.api import telemetry_queries as q
from shared.errors import ValidationFailed

RANGES: dict[str, timedelta] = {"1h": timedelta(hours=1), "6h": timedelta(hours=6),
                                "24h": timedelta(days=1), "7d": timedelta(days=7),
                                "30d": timedelta(days=30), "90d": timedelta(days=90)}
DEFAULT_RANGE = "24h"
MAX_SPAN = timedelta(days=400)
MIN_WIDTH, MAX_WIDTH = 100, 4000  # CSS pixels of a chart
MAX_METRICS = 8  # charts at once
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
STEPS = tuple(timedelta(seconds=s) for s in (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800))
WANTED = ["avg", "min", "max", "count"]
# A gap in raw readings: this many times their usual spacing without one.
RAW_GAP = 5

# The catalog ids of the names in $2 with the unit of $1's stored values of each
# (telemetry_queries.OWN_UNIT; $3 the known metrics): metrics and device_units at once.
METRICS = """
    SELECT m.id, m.name, """ + q.OWN_UNIT.replace("$KNOWN", "$3") + """ AS unit
      FROM metrics m LEFT JOIN device_units du ON du.device = $1 AND du.metric = m.id
     WHERE m.name = ANY($2::text[]) ORDER BY m.id"""
# Per metric its first $5 readings in [$3, $4): one index range scan each, stopping there.
RAW = """
    SELECT s.id AS metric, t.time, t.value
      FROM unnest($2::smallint[]) AS s(id) CROSS JOIN LATERAL (
           SELECT time, value FROM telemetry
            WHERE device = $1 AND metric = s.id AND time >= $3 AND time < $4
            ORDER BY time LIMIT $5) AS t
     ORDER BY s.id, t.time"""


@dataclass(frozen=True, slots=True)
class Plan:
    bucket: timedelta
    start: datetime
    end: datetime
    source: q.Source
    table: str


def floor_to(moment: datetime, grid: timedelta) -> datetime:
    return q.ORIGIN + (moment - q.ORIGIN) // grid * grid


def ceil_to(moment: datetime, grid: timedelta) -> datetime:
    down = floor_to(moment, grid)
    return down if down == moment else down + grid


def plan(start: datetime, end: datetime, points: int) -> Plan:
    """The narrowest bucket of STEPS giving at most `points` buckets over the range (widened
    to its rollup's grid), and the source that serves it."""
    for step in STEPS:
        grid = HOUR if step % HOUR == timedelta(0) else \
            MINUTE if step % MINUTE == timedelta(0) else None
        try:
            lo, hi = (floor_to(start, grid), ceil_to(end, grid)) if grid else (start, end)
        except OverflowError:  # the grid's next mark would be in the year 10000
            raise ValidationFailed("bad_time", "end: too late to chart, in the last hour "
                                   "of the year 9999", field="end") from None
        if math.ceil((hi - lo) / step) + 1 <= points:
            source, table = q.source_for(step, lo, hi, WANTED)
            return Plan(step, lo, hi, source, table)
    raise ValidationFailed("bad_range", "start: the range is too long for this chart",
                           field="start")


def check(start: datetime, end: datetime, width: int) -> None:
    if end - start > MAX_SPAN:
        raise ValidationFailed("bad_range", f"start: at most {MAX_SPAN.days} days before end",
                               field="start")
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValidationFailed("bad_width", f"width: {MIN_WIDTH} to {MAX_WIDTH} pixels",
                               field="width")


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def raw_series(rows: list[asyncpg.Record], points: int) -> dict[str, Any]:
    """Readings as they are, with a null where the device went quiet for much longer than
    its usual spacing (while the budget allows), so the line breaks there."""
    times = [epoch(r["time"]) for r in rows]
    values: list[float | None] = [r["value"] for r in rows]
    if len(times) > 2:
        usual = statistics.median(b - a for a, b in itertools.pairwise(times))
        spare = points - len(times)
        t_out: list[float] = []
        v_out: list[float | None] = []
        for i, (t, v) in enumerate(zip(times, values, strict=True)):
            if i and spare > 0 and usual > 0 and t - times[i - 1] > RAW_GAP * usual:
                t_out.append(times[i - 1] + usual)
                v_out.append(None)
                spare -= 1
            t_out.append(t)
            v_out.append(v)
        times, values = t_out, v_out
    return {"source": "raw", "bucket_seconds": None, "t": times, "avg": values}


def bucket_series(rows: list[asyncpg.Record], found: Plan) -> dict[str, Any]:
    """Buckets in time order, a null bucket where one or more are missing."""
    width = found.bucket.total_seconds()
    out: dict[str, list[Any]] = {"t": [], "avg": [], "min": [], "max": [], "count": []}
    previous: float | None = None
    for r in rows:
        at = epoch(r["b"])
        if previous is not None and at - previous > width:
            for key in out:
                out[key].append(previous + width if key == "t" else None)
        for key in out:
            out[key].append(at if key == "t" else r[key])
        previous = at
    return {"source": found.source, "bucket_seconds": int(width), **out}


async def series(pool: asyncpg.Pool, dev: q.Device, names: list[str], start: datetime,
                 end: datetime, width: int) -> dict[str, Any]:
    """{start, end, bucket_seconds, source, series: {metric: {unit, source, t, avg, ...}}}:
    times in epoch seconds, what uPlot draws."""
    check(start, end, width)
    found = await pool.fetch(METRICS, dev.id, names, q.KNOWN_METRICS)
    by_id = {r["id"]: r["name"] for r in found}
    chosen = plan(start, end, width)
    buckets: dict[int, list[asyncpg.Record]] = defaultdict(list)
    if by_id:
        for r in await q.aggregate_rows(pool, chosen.source, chosen.table, WANTED, dev,
                                        list(by_id), chosen.start, chosen.end, chosen.bucket):
            buckets[r["metric"]].append(r)
    # Readings in the widened range, so at least those in [start, end).
    sparse = [i for i in by_id if sum(r["count"] for r in buckets[i]) <= width]
    raw: dict[int, list[asyncpg.Record]] = defaultdict(list)
    if sparse:
        for r in await pool.fetch(RAW, dev.id, sparse, start, end, width):
            raw[r["metric"]].append(r)
    out: dict[str, Any] = {}
    for r in sorted(found, key=lambda r: names.index(r["name"])):  # as asked
        part = raw_series(raw[r["id"]], width) if r["id"] in sparse else \
            bucket_series(buckets[r["id"]], chosen)
        out[r["name"]] = {"unit": r["unit"], **part}
    wide = len(sparse) < len(by_id)
    return {"start": epoch(chosen.start if wide else start),
            "end": epoch(chosen.end if wide else end), "width": width,
            "bucket_seconds": int(chosen.bucket.total_seconds()) if wide else None,
            "source": chosen.source if wide else "raw", "series": out}
