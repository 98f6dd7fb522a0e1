"""Stored telemetry as the API reads it: query parameters checked, names resolved to the
catalog's ids, and the SQL of the raw, latest, aggregate and export routes.

Storage (migrations 0003, 0004): narrow `telemetry(time, device, metric, value, quality)`
keyed by catalog ids and unique on (device, metric, time); text values in
`telemetry_text`; `telemetry_latest` (newest value per (device, metric) by event time);
rollups `telemetry_1m`, `telemetry_1h` with bucket, device, metric, avg, min, max, count
(continuous aggregates on TimescaleDB, views on plain PostgreSQL). Rollup buckets are
`date_bin` from Monday 2000-01-03 UTC (`time_bucket`'s default origin), as here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg

from services.api.deps import visible
from services.api.pagination import decode_cursor, encode_cursor
from services.api.security.principal import Principal
from shared.errors import NotFound, ValidationFailed
from shared.mqtt import NAME_PATTERN, NAME_RE
from shared.units import CANONICAL

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # the rollups' bucket origin
MAX_METRICS = 50
MAX_BUCKETS = 5000  # per series
MAX_BUCKET = timedelta(days=366)
FUNCTIONS = ("avg", "min", "max", "sum", "count", "first", "last", "stddev")
DEFAULT_FUNCTIONS = ("avg", "min", "max", "count")
# Rollups keep avg, min, max, count per bucket: avg and sum combine exactly from avg·count
# (sum up to float rounding); first, last and stddev need the raw rows.
ROLLUP_FUNCTIONS = frozenset({"avg", "min", "max", "sum", "count"})
ROLLUPS = ((timedelta(hours=1), "telemetry_1h", "rollup_1h"),
           (timedelta(minutes=1), "telemetry_1m", "rollup_1m"))
ROLLUP_STEPS = {table: step for step, table, _ in ROLLUPS}
Source = Literal["rollup_1h", "rollup_1m", "raw"]
_BUCKET = re.compile(r"(\d{1,9})(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    device_id: str
    device_type: str | None = None
    status: str | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    id: int
    name: str
    unit: str | None


# --- parameters ----------------------------------------------------------------------------


def utc(value: datetime, field: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationFailed("bad_time", f"{field}: out of range", field=field) from None


def window(start: datetime | None, end: datetime | None, default: timedelta
           ) -> tuple[datetime, datetime]:
    """[start, end) in UTC; end defaults to now, start to `default` before end."""
    end = utc(end, "end") if end is not None else datetime.now(UTC)
    try:
        start = utc(start, "start") if start is not None else end - default
    except OverflowError:
        raise ValidationFailed("bad_time", "start: out of range", field="start") from None
    if start >= end:
        raise ValidationFailed("bad_range", "end: must be after start", field="end")
    return start, end


def names(raw: str | None, field: str = "metrics") -> list[str] | None:
    """`a,b,c` → names (None when not given: every metric)."""
    if raw is None:
        return None
    found = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not found:
        raise ValidationFailed("bad_metrics", f"{field}: give at least one name", field=field)
    if len(found) > MAX_METRICS:
        raise ValidationFailed("bad_metrics", f"{field}: at most {MAX_METRICS} names",
                               field=field)
    for name in found:
        if not NAME_RE.fullmatch(name):
            raise ValidationFailed("bad_metrics", f"{field}: {name[:64]!r} is not a metric "
                                   f"name ({NAME_PATTERN})", field=field)
    return found


def bucket_width(raw: str) -> timedelta:
    """`90s`, `15m`, `1h`, `1d`: any whole number of seconds, minutes, hours or days."""
    found = _BUCKET.fullmatch(raw.strip())
    if found is None or int(found[1]) == 0:
        raise ValidationFailed("bad_bucket", "bucket: a positive whole number and a unit, "
                               "s, m, h or d (e.g. 90s, 15m, 1h, 1d)", field="bucket")
    width = timedelta(seconds=int(found[1]) * _UNIT_SECONDS[found[2]])
    if width > MAX_BUCKET:
        raise ValidationFailed("bad_bucket", f"bucket: at most {MAX_BUCKET.days}d",
                               field="bucket")
    return width


def functions(raw: str | None) -> list[str]:
    if raw is None:
        return list(DEFAULT_FUNCTIONS)
    found = list(dict.fromkeys(f.strip() for f in raw.split(",") if f.strip()))
    unknown = [f for f in found if f not in FUNCTIONS]
    if unknown or not found:
        raise ValidationFailed("bad_functions", f"functions: {', '.join(unknown) or 'none'} "
                               f"not among {', '.join(FUNCTIONS)}", field="functions")
    return found


def check_buckets(start: datetime, end: datetime, width: timedelta) -> None:
    buckets = math.ceil((end - start) / width) + 1  # +1: the range need not start a bucket
    if buckets > MAX_BUCKETS:
        raise ValidationFailed("too_many_buckets", f"bucket: {buckets} buckets per metric over "
                               f"this range > {MAX_BUCKETS}; widen the bucket or shorten "
                               "the range", field="bucket")


def aligned(moment: datetime, step: timedelta) -> bool:
    return (moment - ORIGIN) % step == timedelta(0)


def source_for(width: timedelta, start: datetime, end: datetime,
               wanted: list[str]) -> tuple[Source, str]:
    """The coarsest source that answers exactly: a rollup whose buckets tile each requested
    bucket and the range (its width a multiple of the rollup's, both ends on its grid),
    and only for functions the rollups hold; else the raw rows."""
    if set(wanted) <= ROLLUP_FUNCTIONS:
        for step, table, name in ROLLUPS:
            if width % step == timedelta(0) and aligned(start, step) and aligned(end, step):
                return name, table  # type: ignore[return-value]  # a Source literal
    return "raw", "telemetry"


# --- catalog -------------------------------------------------------------------------------


async def device(conn: asyncpg.Pool | asyncpg.Connection, who: Principal,
                 device_id: str) -> Device:
    visible(who, device_id)
    row = await conn.fetchrow("SELECT id, device_id, device_type, status, last_seen "
                              "FROM devices WHERE device_id = $1", device_id)
    if row is None:
        raise NotFound(f"device {device_id} does not exist")
    return Device(*row.values())


# The catalog entries of some names ({names}: the parameter holding them).
_NAMED = "SELECT id, name, unit FROM metrics WHERE name = ANY({names}::text[])"


async def metric_ids(pool: asyncpg.Pool, wanted: list[str]) -> list[int]:
    """The catalog ids of `wanted`, in id order (unknown names are left out: no data)."""
    rows = await pool.fetch(_NAMED.format(names="$1") + " ORDER BY id", wanted)
    return [r["id"] for r in rows]


# A device and its metrics in one round trip: one row per metric (in id order), or one row
# with a NULL metric when it has none. $1 device_id; $2 the wanted names (NAMED only).
_DEVICE_WITH = """
    SELECT d.id, d.device_id, d.device_type, d.status, d.last_seen, m.id AS metric, m.name,
           m.unit
      FROM devices d LEFT JOIN LATERAL ({metrics}) AS m ON true
     WHERE d.device_id = $1 ORDER BY m.id"""
DEVICE_WITH_NAMED = _DEVICE_WITH.format(metrics=_NAMED.format(names="$2"))
DEVICE_WITH_REPORTED = _DEVICE_WITH.format(
    metrics="SELECT m.id, m.name, m.unit FROM telemetry_latest l JOIN metrics m "
            "ON m.id = l.metric WHERE l.device = d.id")


async def device_and_metrics(pool: asyncpg.Pool, who: Principal, device_id: str,
                             wanted: list[str] | None) -> tuple[Device, list[Metric]]:
    """`device` and `metrics` of it at once."""
    visible(who, device_id)
    if wanted is None:
        rows = await pool.fetch(DEVICE_WITH_REPORTED, device_id)
    else:
        rows = await pool.fetch(DEVICE_WITH_NAMED, device_id, wanted)
    if not rows:
        raise NotFound(f"device {device_id} does not exist")
    first = rows[0]
    return (Device(first["id"], first["device_id"], first["device_type"], first["status"],
                   first["last_seen"]),
            [Metric(r["metric"], r["name"], r["unit"]) for r in rows if r["metric"] is not None])


# The unit of a device's stored values of a metric: the catalog's for a known metric
# (stored canonical), else the device's own. Needs `m` (metrics), `du` (the device's
# device_units row) and the known metrics' names as $KNOWN.
OWN_UNIT = "CASE WHEN m.name = ANY($KNOWN::text[]) THEN m.unit ELSE du.unit END"
KNOWN_METRICS = sorted(CANONICAL)


async def device_units(conn: asyncpg.Pool | asyncpg.Connection, dev: Device,
                       found: list[Metric]) -> dict[int, str | None]:
    """Metric id → the unit of `dev`'s stored values of it (OWN_UNIT). A known metric is
    stored in its canonical unit, the catalog's (its `device_units` row is the unit the
    device sends, converted from at ingest). Any other metric is stored as sent, so its
    unit is the one this device last gave, or none: never the catalog's, which is
    whatever the first device to send the metric said."""
    rows = await conn.fetch(
        "SELECT m.id, " + OWN_UNIT.replace("$KNOWN", "$3") + " AS unit FROM metrics m "
        "LEFT JOIN device_units du ON du.device = $1 AND du.metric = m.id "
        "WHERE m.id = ANY($2::smallint[])", dev.id, [m.id for m in found], KNOWN_METRICS)
    return {r["id"]: r["unit"] for r in rows}


# --- raw range -----------------------------------------------------------------------------

# Per series (metric, kind) an index range scan on (device, metric, time) that stops at
# `limit` rows; PostgreSQL merges them in time order (Merge Append) and sorts only the rows
# of one instant by (metric, kind) (Incremental Sort), so a page reads about `limit` rows
# whatever the range and sorts none of them whole. The ids are the catalog's integers, so
# inlined (at most MAX_METRICS, or the ones a device reported). The cursor is the last
# row's (time, metric, kind): $2 is the later of start and its time, $4 its time again and
# $5 its (metric, kind) as metric * 2 + kind, so a series after it in that order starts at
# the cursor's time, the others just after it.
def raw_query(metric_ids: list[int]) -> str:
    """$1 device, $2 from, $3 end, $4 the cursor's time (NULL: the first page), $5 its
    series, $6 limit."""
    parts = [f"(SELECT time, metric, {kind} AS kind, {columns}, quality FROM {table} "
             f"WHERE device = $1 AND metric = {int(i)} AND time >= $2 AND time < $3 "
             f"AND ($4::timestamptz IS NULL OR time > $4 OR {int(i) * 2 + kind} > $5) "
             f"ORDER BY time LIMIT $6)"
             for i in metric_ids
             for kind, table, columns in ((0, "telemetry", "value, NULL::text AS value_text"),
                                          (1, "telemetry_text", "NULL::float8, value"))]
    return ("SELECT * FROM (" + " UNION ALL ".join(parts)
            + ") AS r ORDER BY time, metric, kind LIMIT $6")


def raw_cursor(cursor: str | None) -> tuple[datetime, int, int] | None:
    key = decode_cursor(cursor, 3)
    if key is None:
        return None
    at, metric, kind = key
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
        when = when.astimezone(UTC) if when is not None and when.tzinfo is not None else None
    except (ValueError, OverflowError):
        when = None
    if when is None or type(metric) is not int or type(kind) is not int or kind not in (0, 1) \
            or not -32768 <= metric <= 32767:
        raise ValidationFailed("bad_cursor", "cursor: not a cursor this endpoint returned",
                               field="cursor")
    return when, metric, kind


async def raw_page(pool: asyncpg.Pool, dev: Device, found: list[Metric], start: datetime,
                   end: datetime, after: tuple[datetime, int, int] | None, limit: int
                   ) -> tuple[list[dict[str, Any]], str | None]:
    if not found:
        return [], None
    names_by_id = {m.id: m.name for m in found}
    begin = max(start, after[0]) if after else start
    rows = await pool.fetch(raw_query(list(names_by_id)), dev.id, begin, end,
                            after[0] if after else None,
                            after[1] * 2 + after[2] if after else None, limit + 1)
    # By position (time, metric, kind, value, value_text, quality): up to raw_page_max rows.
    items = [{"time": r[0], "metric": names_by_id[r[1]], "value": r[3] if r[2] == 0 else r[4],
              "quality": r[5]} for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return items, (encode_cursor(last["time"].isoformat(), last["metric"], last["kind"])
                   if last is not None else None)


# --- latest --------------------------------------------------------------------------------

# $1 device, $2 metric ids (NULL: all), $3 the known metrics' names (KNOWN_METRICS).
LATEST_DEVICE = """
    SELECT m.name, """ + OWN_UNIT.replace("$KNOWN", "$3") + """ AS unit, l.time, l.value,
           l.value_text, l.quality
      FROM telemetry_latest l JOIN metrics m ON m.id = l.metric
           LEFT JOIN device_units du ON du.device = l.device AND du.metric = l.metric
     WHERE l.device = $1 AND ($2::smallint[] IS NULL OR l.metric = ANY($2))
     ORDER BY m.name"""


def latest_value(row: asyncpg.Record) -> dict[str, Any]:
    value = row["value"] if row["value"] is not None else row["value_text"]
    return {"value": value, "time": row["time"], "unit": row["unit"],
            "quality": row["quality"]}


# --- aggregates ----------------------------------------------------------------------------


def aggregate_query(source: Source, table: str, wanted: list[str]) -> str:
    """$1 device, $2 metric ids, $3 start, $4 end, $5 bucket width, $6 origin."""
    if source != "raw":
        return f"""
            SELECT date_bin($5::interval, bucket, $6) AS b, metric,
                   sum(avg * count) / sum(count) AS avg, min(min) AS min, max(max) AS max,
                   sum(avg * count) AS sum, sum(count)::bigint AS count
              FROM {table}
             WHERE device = $1 AND metric = ANY($2) AND bucket >= $3 AND bucket < $4
             GROUP BY 1, 2 ORDER BY 2, 1"""
    ends = {"first", "last"} & set(wanted)
    joins = "".join(
        f" JOIN telemetry {f} ON {f}.device = $1 AND {f}.metric = a.metric "
        f"AND {f}.time = a.t_{f}" for f in sorted(ends))
    picks = "".join(f", {f}.value AS {f}" for f in sorted(ends))
    return f"""
        WITH a AS (
            SELECT date_bin($5::interval, time, $6) AS b, metric, avg(value) AS avg,
                   min(value) AS min, max(value) AS max, sum(value) AS sum,
                   count(*) AS count, stddev_samp(value) AS stddev,
                   min(time) AS t_first, max(time) AS t_last
              FROM telemetry
             WHERE device = $1 AND metric = ANY($2) AND time >= $3 AND time < $4
             GROUP BY 1, 2)
        SELECT a.*{picks} FROM a{joins} ORDER BY a.metric, a.b"""


def rollup_query(table: str) -> str:
    """A rollup's own buckets, when they are the ones asked for (the width its step): the
    columns of aggregate_query without regrouping one row per bucket (exact: avg as the
    rollup holds it, not Σ(avg·count)/Σcount of one row). $1 device, $2 metric ids,
    $3 start, $4 end."""
    return f"""
        SELECT bucket AS b, metric, avg, min, max, avg * count AS sum, count
          FROM {table}
         WHERE device = $1 AND metric = ANY($2) AND bucket >= $3 AND bucket < $4
         ORDER BY metric, bucket"""


async def aggregate_rows(pool: asyncpg.Pool, source: Source, table: str, wanted: list[str],
                         dev: Device, metric_ids: list[int], start: datetime, end: datetime,
                         width: timedelta) -> list[asyncpg.Record]:
    """Rows of aggregate_query (b, metric, the functions) by metric, then bucket."""
    if source != "raw" and width == ROLLUP_STEPS[table]:
        return await pool.fetch(rollup_query(table), dev.id, metric_ids, start, end)
    return await pool.fetch(aggregate_query(source, table, wanted), dev.id, metric_ids,
                            start, end, width, ORIGIN)


# --- export --------------------------------------------------------------------------------


def export_query(metric_ids: list[int]) -> str:
    """Every row of these metrics in [$2, $3), numeric and text, by (time, metric): one
    index range scan per series, merged (ids are the catalog's integers, so inlined)."""
    parts = [f"SELECT time, metric, value, NULL::text AS value_text, quality FROM telemetry "
             f"WHERE device = $1 AND metric = {int(i)} AND time >= $2 AND time < $3"
             for i in metric_ids]
    parts += [f"SELECT time, metric, NULL::float8, value, quality FROM telemetry_text "
              f"WHERE device = $1 AND metric = {int(i)} AND time >= $2 AND time < $3"
              for i in metric_ids]
    return " UNION ALL ".join(parts) + " ORDER BY time, metric"
