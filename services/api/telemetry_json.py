"""Telemetry responses written as JSON without a pydantic model per value: large pages
(51,830 latest values of 5,000 devices, 5,760 aggregate buckets) spent most of their time
building and validating one model per item. The routes keep their `response_model` (the
documented schema) and return these bodies as they are.

The output is what the models serialized to, after parsing: times ISO 8601 in UTC with
`Z` (microseconds only when not zero), floats as JSON numbers, keys in the models'
order. orjson writes the raw pages and aggregates; PostgreSQL writes the fleet's latest
values (one text per device), which the API only joins: decoding 51,830 rows and building
their dicts cost more than PostgreSQL spends writing the text.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

from services.api.pagination import encode_cursor
from services.api.telemetry_queries import OWN_UNIT


def response(content: Any) -> Response:
    """`content` as JSON, datetimes (aware, UTC from asyncpg) with a `Z` as pydantic
    writes them."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z),
                    media_type="application/json")


def page(items: list[str], next_cursor: str | None) -> Response:
    """A `Page` whose items are JSON texts already."""
    body = "".join(('{"items":[', ",".join(items), '],"next_cursor":',
                    orjson.dumps(next_cursor).decode(), "}"))
    return Response(body.encode(), media_type="application/json")


# A timestamptz as a JSON string the way pydantic writes a UTC datetime:
# "2026-11-22T10:30:00Z", or "2026-11-22T10:30:00.250000Z" when there are microseconds.
_TIME = ("""to_char({t} AT TIME ZONE 'UTC', '"\\""YYYY-MM-DD"T"HH24:MI:SS') || """
         """CASE WHEN date_trunc('second', {t}) = {t} THEN 'Z"' """
         """ELSE to_char({t} AT TIME ZONE 'UTC', '.US"Z\\""') END""")

# A float8 as a JSON number that parses back as a float: its text (shortest exact, as
# orjson's; exponent from 1e15 and below 1e-4, where orjson writes digits), with `.0` on a
# whole number (2500.0, not 2500). Non-finite values (refused at ingest) become strings.
_NUMBER = ("CASE WHEN l.value = trunc(l.value) AND abs(l.value) < 1e15 "
           "THEN l.value::text || '.0' ELSE to_json(l.value)::text END")

# DeviceLatest as JSON text, per device of one page (device ids and metric names are
# [A-Za-z0-9_.:-], so need no escaping). Metrics are aggregated in name order, as the
# model's dict was filled.
# $1 device_type, $2 tag, $3 a single device (a device's key), $4 after this device_id,
# $5 page size + 1, $6 metric ids (NULL: all), $7 the known metrics' names (units: as
# q.OWN_UNIT, each device's own).
LATEST_FLEET = """
    WITH d AS (
        SELECT id, device_id, device_type, status, last_seen FROM devices
         WHERE ($1::text IS NULL OR device_type = $1)
           AND ($2::text IS NULL OR metadata -> 'tags' ? $2)
           AND ($3::text IS NULL OR device_id = $3)
           AND ($4::text IS NULL OR device_id > $4)
         ORDER BY device_id LIMIT $5),
    m AS (SELECT id, name, unit, '"' || name || '":{"value":' AS head FROM metrics)
    SELECT d.device_id,
           '{"device_id":"' || d.device_id || '","device_type":'
           || coalesce(to_json(d.device_type)::text, 'null')
           || ',"status":' || coalesce(to_json(d.status)::text, 'null')
           || ',"last_seen":' || coalesce(""" + _TIME.format(t="d.last_seen") + """, 'null')
           || ',"metrics":{' || coalesce(string_agg(
                  m.head || coalesce(""" + _NUMBER + """, to_json(l.value_text)::text, 'null')
                  || ',"time":' || """ + _TIME.format(t="l.time") + """
                  || ',"unit":' || coalesce(to_json(""" + OWN_UNIT.replace("$KNOWN", "$7") + """
                  )::text, 'null') || ',"quality":' || coalesce(l.quality::text, 'null') || '}',
                  ',' ORDER BY m.name), '') || '}}' AS item
      FROM d LEFT JOIN telemetry_latest l
             ON l.device = d.id AND ($6::smallint[] IS NULL OR l.metric = ANY($6))
             LEFT JOIN m ON m.id = l.metric
             LEFT JOIN device_units du ON du.device = d.id AND du.metric = l.metric
     GROUP BY d.id, d.device_id, d.device_type, d.status, d.last_seen
     ORDER BY d.device_id"""


def fleet_page(rows: list[Any], size: int) -> Response:
    """rows of LATEST_FLEET, fetched with one more than `size`."""
    more = len(rows) > size
    rows = rows[:size]
    return page([r["item"] for r in rows],
                encode_cursor(rows[-1]["device_id"]) if more else None)
