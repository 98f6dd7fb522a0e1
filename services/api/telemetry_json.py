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
# (to_char measured faster than to_json with string functions over 51,830 values.)
_TIME = ("""to_char({t} AT TIME ZONE 'UTC', '"\\""YYYY-MM-DD"T"HH24:MI:SS') || """
         """CASE WHEN date_trunc('second', {t}) = {t} THEN 'Z"' """
         """ELSE to_char({t} AT TIME ZONE 'UTC', '.US"Z\\""') END""")

# A float8 as a JSON number that parses back as a float: its text (shortest exact, as
# orjson's; exponent from 1e15 and below 1e-4, where orjson writes digits), with `.0` on a
# whole number (2500.0, not 2500). Non-finite values (refused at ingest) become strings.
_NUMBER = ("CASE WHEN l.value = trunc(l.value) AND abs(l.value) < 1e15 "
           "THEN l.value::text || '.0' ELSE to_json(l.value)::text END")

# The devices of a fleet page, by device_id: $1 device_type, $2 tag, $3 a single device (a
# device's key), $4 after this device_id, $5 up to this one, inclusive (a part of a page;
# NULL: no bound), $6 page size + 1.
_PAGE_DEVICES = """FROM devices
         WHERE ($1::text IS NULL OR device_type = $1)
           AND ($2::text IS NULL OR metadata -> 'tags' ? $2)
           AND ($3::text IS NULL OR device_id = $3)
           AND ($4::text IS NULL OR device_id > $4)
           AND ($5::text IS NULL OR device_id <= $5)
         ORDER BY device_id LIMIT $6"""

# A fleet page's device ids alone (an index-only walk for the whole fleet or a device
# type), to split a large page in parts: same parameters as _PAGE_DEVICES.
FLEET_IDS = "SELECT device_id " + _PAGE_DEVICES

# DeviceLatest as JSON text, per device of one page (device ids and metric names are
# [A-Za-z0-9_.:-], so need no escaping). Each device's values are aggregated by a
# subquery of their own (its primary-key probe), in name order as the model's dict was
# filled: no sort or grouping of the whole page's values. The catalog's part of each
# value (its name's key, a known metric's unit) is written once per metric (m, kept
# MATERIALIZED: inlined, it was written again for every value), and a device's own unit
# looked up only for a metric that is not known.
# $1-$6 as _PAGE_DEVICES, $7 metric ids (NULL: all), $8 the known metrics' names (units:
# as q.OWN_UNIT, each device's own).
LATEST_FLEET = """
    WITH d AS (
        SELECT id, device_id, device_type, status, last_seen """ + _PAGE_DEVICES + """),
    m AS MATERIALIZED (SELECT id, name, '"' || name || '":{"value":' AS head,
                 CASE WHEN name = ANY($8::text[]) THEN coalesce(to_json(unit)::text, 'null')
                 END AS known_unit
            FROM metrics)
    SELECT d.device_id,
           '{"device_id":"' || d.device_id || '","device_type":'
           || coalesce(to_json(d.device_type)::text, 'null')
           || ',"status":' || coalesce(to_json(d.status)::text, 'null')
           || ',"last_seen":' || coalesce(""" + _TIME.format(t="d.last_seen") + """, 'null')
           || ',"metrics":{' || coalesce((
               SELECT string_agg(v.head || v.value || ',"time":' || """ + _TIME.format(
                   t="v.time") + """ || ',"unit":' || v.unit || ',"quality":' || v.quality
                   || '}', ',' ORDER BY v.name)
                 FROM (SELECT m.name, m.head,
                              coalesce(""" + _NUMBER + """, to_json(l.value_text)::text,
                                       'null') AS value,
                              l.time,
                              coalesce(m.known_unit, (
                                  SELECT to_json(du.unit)::text FROM device_units du
                                   WHERE du.device = l.device AND du.metric = l.metric),
                                  'null') AS unit,
                              coalesce(l.quality::text, 'null') AS quality
                         FROM telemetry_latest l JOIN m ON m.id = l.metric
                        WHERE l.device = d.id
                          AND ($7::smallint[] IS NULL OR l.metric = ANY($7))) AS v
               ), '') || '}}' AS item
      FROM d ORDER BY d.device_id"""


def fleet_page(rows: list[Any], size: int, more: bool = False,
               last: str | None = None) -> Response:
    """rows of LATEST_FLEET, fetched with one more than `size`; `more`: more devices follow
    (the page's ids, read first when the page was written in parts, had one more), and
    `last` their last device id, the cursor when none of the page's rows is left."""
    more = more or len(rows) > size
    rows = rows[:size]
    after = rows[-1]["device_id"] if rows else last
    return page([r["item"] for r in rows],
                encode_cursor(after) if more and after is not None else None)
