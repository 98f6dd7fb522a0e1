"""Stored telemetry: raw history by cursor, latest values per device and across the fleet,
bucketed aggregates (served from the coarsest rollup that answers exactly), and a streamed
CSV export. Times are UTC; known ESP metrics are in their canonical units (docs/payloads.md)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from itertools import pairwise
from operator import itemgetter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from services.api import telemetry_json as j
from services.api import telemetry_queries as q
from services.api.deps import Res, require
from services.api.pagination import Page, decode_cursor
from services.api.security.principal import Principal
from shared.errors import DependencyUnavailable, ValidationFailed
from shared.timefmt import utc_text

router = APIRouter(tags=["telemetry"])
Reader = Annotated[Principal, Depends(require("telemetry:read"))]
Metrics = Annotated[str | None, Query(description="Comma-separated metric names; all when "
                                      "omitted. An unknown name is no data, not an error",
                                      examples=["flow_rate,pip"])]
Start = Annotated[AwareDatetime | None, Query(description="Inclusive, ISO 8601 with zone")]
End = Annotated[AwareDatetime | None, Query(description="Exclusive; default now")]
Value = float | str
DAY = timedelta(days=1)
EXPORT_CHUNK = 5000
# A fleet page of more devices than this is written in two halves at once, on two of the
# pool's connections (it has 10: app.py): one PostgreSQL backend writes the JSON at about
# 1.4 µs a value on one core (70 ms of the 5,000-device fleet's 51,830 values), and two
# use two. Pages up to it (every page at the default INSA_API_PAGE_MAX) keep one query
# and one connection: a few ms to save, less an extra query for the page's ids.
SPLIT_ABOVE = 1000


class Point(BaseModel):
    time: datetime
    metric: str = Field(examples=["flow_rate"])
    value: Value = Field(examples=[2500.5])
    quality: int | None = Field(None, examples=[100])


class LatestValue(BaseModel):
    value: Value | None = Field(examples=[2500.5])
    time: datetime = Field(description="Event time of the reading")
    unit: str | None = Field(None, examples=["bbl/d"])
    quality: int | None = None


class DeviceLatest(BaseModel):
    device_id: str = Field(examples=["W-101"])
    device_type: str | None = Field(default=None, examples=["esp"])
    status: str | None = Field(default=None, examples=["online"])
    last_seen: datetime | None = None
    metrics: dict[str, LatestValue] = Field(
        examples=[{"flow_rate": {"value": 2500.5, "time": "2026-11-22T10:30:00Z",
                                 "unit": "bbl/d", "quality": None}}])


class Bucket(BaseModel):
    bucket: datetime = Field(description="Start of the bucket (UTC)")
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    sum: float | None = None
    count: int | None = None
    first: float | None = None
    last: float | None = None
    stddev: float | None = Field(None, description="Sample standard deviation (n-1); null "
                                 "for a bucket of one value")


class Aggregate(BaseModel):
    device_id: str = Field(examples=["W-101"])
    start: datetime
    end: datetime
    bucket: str = Field(examples=["15m"])
    bucket_seconds: int = Field(examples=[900])
    functions: list[str] = Field(examples=[["avg", "max"]])
    source: q.Source = Field(description="What served it: the hourly or per-minute rollup, "
                             "or the raw rows", examples=["rollup_1h"])
    series: dict[str, list[Bucket]] = Field(description="Per metric, its non-empty buckets "
                                            "in time order, with the requested functions")


@router.get("/devices/{device_id}/telemetry", response_model=Page[Point],
            summary="Raw readings of a device, oldest first", responses={404: {}})
async def raw(device_id: str, res: Res, who: Reader, metrics: Metrics = None,
              start: Start = None, end: End = None, cursor: str | None = None,
              limit: Annotated[int | None, Query(ge=1, description="At most the server's "
                                                 "raw_page_max")] = None) -> Response:
    """Numeric and text values by (time, metric); the cursor continues after the last
    row, so pages neither overlap nor skip while new readings arrive. Start defaults to
    a day before end."""
    begin, until = q.window(start, end, DAY)
    size = _limit(limit, res.settings.raw_page_max)
    after = q.raw_cursor(cursor)
    dev, found = await q.device_and_metrics(res.pool, who, device_id, q.names(metrics))
    items, next_cursor = await q.raw_page(res.pool, dev, found, begin, until, after, size)
    return j.response({"items": items, "next_cursor": next_cursor})


@router.get("/devices/{device_id}/telemetry/latest", response_model=DeviceLatest,
            summary="Latest value of each metric of a device", responses={404: {}})
async def latest(device_id: str, res: Res, who: Reader, metrics: Metrics = None
                 ) -> DeviceLatest:
    """From telemetry_latest (newest by event time: a late reading never replaces it)."""
    dev = await q.device(res.pool, who, device_id)
    ids = await _ids(res, metrics)
    rows = await res.pool.fetch(q.LATEST_DEVICE, dev.id, ids, q.KNOWN_METRICS)
    return DeviceLatest(device_id=dev.device_id, device_type=dev.device_type,
                        status=dev.status, last_seen=dev.last_seen,
                        metrics={r["name"]: LatestValue(**q.latest_value(r)) for r in rows})


@router.get("/telemetry/latest", response_model=Page[DeviceLatest],
            summary="Latest values across the fleet, by device id")
async def fleet_latest(res: Res, who: Reader, metrics: Metrics = None,
                       device_type: str | None = None,
                       tag: Annotated[str | None, Query(description="A tag in the device's "
                                                        "metadata.tags")] = None,
                       cursor: str | None = None,
                       limit: Annotated[int | None, Query(ge=1)] = None) -> Response:
    """One page of devices (all of them, a device_type, or a tag) with their latest values,
    read from telemetry_latest by its primary key: one index probe per device."""
    size = _limit(limit, res.settings.page_max)
    key = decode_cursor(cursor, 1)
    if key is not None and not isinstance(key[0], str):
        raise ValidationFailed("bad_cursor", "cursor: not a cursor this endpoint returned",
                               field="cursor")
    return await _fleet_page(res, (device_type, tag, who.device_id), key[0] if key else None,
                             size, await _ids(res, metrics))


async def _fleet_page(res: Res, filters: tuple[str | None, str | None, str | None],
                      after: str | None, size: int, metric_ids: list[int] | None) -> Response:
    """A fleet page (`filters`: device_type, tag, a device key's own device), its JSON
    written by PostgreSQL: in one query, or for a page of more than SPLIT_ABOVE devices,
    in two halves at once, split by device_id after reading the page's ids."""
    if size <= SPLIT_ABOVE:
        return j.fleet_page(await res.pool.fetch(j.LATEST_FLEET, *filters, after, None,
                                                 size + 1, metric_ids, q.KNOWN_METRICS), size)
    devices = [r[0] for r in await res.pool.fetch(j.FLEET_IDS, *filters, after, None,
                                                  size + 1)]
    more, devices = len(devices) > size, devices[:size]
    if not devices:
        return j.fleet_page([], size)
    bounds = [after, devices[-1]] if len(devices) <= SPLIT_ABOVE else \
        [after, devices[len(devices) // 2 - 1], devices[-1]]
    # Each part is (lo, hi]: together exactly the page's devices, in order. A device
    # added meanwhile is in a part, not skipped (fleet_page keeps the page to `size`).
    # A TaskGroup: when one part fails, the other is cancelled and its connection freed.
    async with asyncio.TaskGroup() as group:
        parts = [group.create_task(res.pool.fetch(j.LATEST_FLEET, *filters, lo, hi,
                                                  size + 1, metric_ids, q.KNOWN_METRICS))
                 for lo, hi in pairwise(bounds)]
    # If every device of the page went meanwhile, the walk goes on after them.
    return j.fleet_page([row for part in parts for row in part.result()], size, more,
                        last=devices[-1])


@router.get("/devices/{device_id}/telemetry/aggregate", response_model=Aggregate,
            response_model_exclude_unset=True, responses={404: {}},
            summary="Bucketed statistics of a device's metrics")
async def aggregate(device_id: str, res: Res, who: Reader, metrics: Metrics = None,
                    start: Start = None, end: End = None,
                    bucket: Annotated[str, Query(description="Width: a whole number of s, m, "
                                                 "h or d", examples=["15m"])] = "1h",
                    functions: Annotated[str | None, Query(
                        description=f"Comma-separated, of {', '.join(q.FUNCTIONS)}; default "
                                    f"{','.join(q.DEFAULT_FUNCTIONS)}")] = None) -> Response:
    """Buckets on the rollups' grid (date_bin from Monday 2000-01-03 UTC). Served from
    telemetry_1h when the width is a whole number of hours and start and end are on the
    hour, else from telemetry_1m likewise for minutes, else from the raw rows; first,
    last and stddev always from the raw rows (the rollups do not hold them). `source`
    says which. Start defaults to a day before end."""
    begin, until = q.window(start, end, DAY)
    width = q.bucket_width(bucket)
    wanted = q.functions(functions)
    q.check_buckets(begin, until, width)
    dev, found = await q.device_and_metrics(res.pool, who, device_id, q.names(metrics))
    source, table = q.source_for(width, begin, until, wanted)
    series: dict[str, list[dict[str, Any]]] = {m.name: [] for m in found}
    if found:
        keys = ("bucket", *(f for f in q.FUNCTIONS if f in wanted))  # Bucket's field order
        values = itemgetter("b", *keys[1:])
        # Per row one C-level pick of its values and a dict: thousands of buckets a request.
        add_to = {m.id: series[m.name].append for m in found}
        for r in await q.aggregate_rows(res.pool, source, table, wanted, dev,
                                        [m.id for m in found], begin, until, width):
            add_to[r["metric"]](dict(zip(keys, values(r), strict=True)))
    return j.response({"device_id": dev.device_id, "start": begin, "end": until,
                       "bucket": bucket.strip(), "bucket_seconds": int(width.total_seconds()),
                       "functions": wanted, "source": source, "series": series})


@router.get("/devices/{device_id}/telemetry/export.csv", response_class=StreamingResponse,
            summary="A device's raw readings as CSV, streamed",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "time,metric,value,unit,quality"}, 404: {}})
async def export_csv(device_id: str, res: Res, who: Reader, metrics: Metrics = None,
                     start: Start = None, end: End = None) -> StreamingResponse:
    """Header `time,metric,value,unit,quality`, ISO 8601 UTC times, rows by (time, metric),
    CRLF line ends. The unit is this device's own (docs/api-analytics.md). A text cell a
    spreadsheet could run as a formula (leading =, +, -, @, tab, CR, ...) gets a leading
    `'`; numbers are written as numbers. Streamed from a server-side cursor in chunks of
    5,000 rows, so no range is ever held whole in memory. Start defaults to a day before
    end."""
    begin, until = q.window(start, end, DAY)
    dev, found = await q.device_and_metrics(res.pool, who, device_id, q.names(metrics))
    if res.exports.locked():
        raise DependencyUnavailable("as many exports as the API runs at once are running; "
                                    "retry shortly")
    filename = f"{dev.device_id}_{begin:%Y%m%dT%H%M%SZ}_{until:%Y%m%dT%H%M%SZ}.csv"
    return StreamingResponse(_csv_rows(res, dev, found, begin, until), media_type="text/csv",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{filename}"'})


async def _csv_rows(res: Res, dev: q.Device, found: list[q.Metric], start: datetime,
                    end: datetime) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    # CRLF (RFC 4180) and not just LF: the csv module quotes a field holding a character
    # of the line terminator, so a device's text with a bare CR is quoted rather than
    # starting a new row in a spreadsheet.
    out = csv.writer(buffer, lineterminator="\r\n")
    out.writerow(("time", "metric", "value", "unit", "quality"))
    if found:
        # An export holds a connection while its client reads: a few at once, and a client
        # that stops reading for a minute is cut off, so slow downloads never take the
        # pool from every other request.
        async with res.exports, res.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SET LOCAL idle_in_transaction_session_timeout = '60s'")
            units = await q.device_units(conn, dev, found)
            # Every text cell goes through spreadsheet_safe (names and units once per
            # metric); only the numbers this code formats (value, quality) do not.
            labels = {m.id: (spreadsheet_safe(m.name), spreadsheet_safe(units[m.id] or ""))
                      for m in found}
            rows = 0
            async for r in conn.cursor(q.export_query(list(labels)), dev.id, start, end,
                                       prefetch=EXPORT_CHUNK):
                name, unit = labels[r["metric"]]
                value = repr(r["value"]) if r["value"] is not None else \
                    spreadsheet_safe(r["value_text"])
                out.writerow((utc_text(r["time"]), name, value, unit,
                              "" if r["quality"] is None else r["quality"]))
                rows += 1
                if rows % EXPORT_CHUNK == 0:
                    yield _drain(buffer)
    yield _drain(buffer)


# What makes a spreadsheet read a cell as a formula (OWASP "CSV Injection": = + - @, tab,
# CR; LF as well), the full-width forms, which some spreadsheets and IMEs fold to ASCII,
# and the apostrophe itself, so that "a text cell starting with ' had one added" holds
# and a consumer can always undo it.
_FORMULA_START = frozenset("=+-@\t\r\n'\uff1d\uff0b\uff0d\uff20")


def spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet could run, also after leading whitespace (which spreadsheets
    skip), gets a leading apostrophe: it then reads as text. Our own numbers never go
    through here, so a negative number stays a number."""
    if text[:1] in _FORMULA_START or text.lstrip()[:1] in _FORMULA_START:
        return "'" + text
    return text


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data


def _limit(limit: int | None, page_max: int) -> int:
    if limit is not None and limit > page_max:
        raise ValidationFailed("bad_limit", f"limit: at most {page_max}", field="limit")
    return limit or min(500, page_max)


async def _ids(res: Res, metrics: str | None) -> list[int] | None:
    wanted = q.names(metrics)
    if wanted is None:
        return None
    return await q.metric_ids(res.pool, wanted)
