"""Stored telemetry through the API: raw history by cursor, latest values of a device and
of the fleet, aggregates checked against the same rows computed here (raw-served and
rollup-served), and the CSV export read back: inert in a spreadsheet, with each device's
own units."""

from __future__ import annotations

import csv
import io
import random
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.stack.service_process import ServiceProcess
from services.api.pagination import Page
from services.api.routes.telemetry import DeviceLatest, spreadsheet_safe
from services.api.settings import ApiSettings
from services.api.telemetry_queries import ORIGIN
from tests.fixtures.api import Api
from tests.utils.db import execute, fetchval
from tests.utils.telemetry import Row, iso, params, seed
from tests.utils.waiting import wait_until

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: on every bucket grid


def series(start: datetime, step: timedelta, count: int, metrics: dict[str, float],
           seed_: int = 7) -> list[Row]:
    """Readings every `step` of each metric around its level, with a little noise."""
    rng = random.Random(seed_)
    return [(start + i * step, name, round(level + rng.uniform(-5, 5), 3))
            for i in range(count) for name, level in metrics.items()]


async def test_raw_range_pages_neither_overlap_nor_skip(api: Api, db_url: str) -> None:
    rows = series(T0, timedelta(seconds=10), 20, {"flow_rate": 2500, "pip": 850})
    rows += [(T0 + timedelta(seconds=35), "mode", "auto"), (T0, "mode", "manual")]
    await seed(db_url, "W-1", rows)
    viewer = await api.user("viewer")
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        page = await viewer.get("/devices/W-1/telemetry", params=params(
            start=T0, end=T0 + timedelta(hours=1), limit=15, cursor=cursor))
        assert page.status_code == 200, page.text
        pages.append(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [15, 15, 12]
    got = [(i["time"], i["metric"], i["value"]) for p in pages for i in p]
    assert len(set(got)) == len(got) == len(rows)
    assert sorted(got) == sorted((iso(t), m, v) for t, m, v in rows)
    assert [g[0] for g in got] == sorted(g[0] for g in got), "oldest first across pages"

    # Metrics and range select; an unknown metric is no data.
    some = await viewer.get("/devices/W-1/telemetry", params=params(
        metrics="pip,nothing", start=T0 + timedelta(seconds=50), end=T0 + timedelta(seconds=80)))
    assert [(i["time"], i["value"]) for i in some.json()["items"]] == [
        (iso(t), v) for t, m, v in rows if m == "pip"
        and T0 + timedelta(seconds=50) <= t < T0 + timedelta(seconds=80)]
    none = await viewer.get("/devices/W-1/telemetry", params={"metrics": "nothing"})
    assert none.json() == {"items": [], "next_cursor": None}

    # Raw pages may be larger than any other list's (INSA_API_RAW_PAGE_MAX): a whole day.
    assert api.settings.raw_page_max > api.settings.page_max
    whole = await viewer.get("/devices/W-1/telemetry", params=params(
        start=T0, end=T0 + timedelta(hours=1), limit=api.settings.raw_page_max))
    assert [(i["time"], i["metric"], i["value"]) for i in whole.json()["items"]] == got
    fleet = await viewer.get("/telemetry/latest", params={"limit": api.settings.page_max + 1})
    assert fleet.status_code == 422, fleet.text


RAW_PAGE_MAX = ApiSettings.model_fields["raw_page_max"].default
BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [  # route, query, field named
    ("telemetry", {"start": iso(T0), "end": iso(T0)}, "end"),
    ("telemetry", {"start": iso(T0 + timedelta(hours=1)), "end": iso(T0)}, "end"),
    ("telemetry", {"end": "0001-01-01T00:00:00Z"}, "start"),
    ("telemetry", {"limit": RAW_PAGE_MAX + 1}, "limit"),
    ("telemetry", {"cursor": "not-a-cursor"}, "cursor"),
    ("telemetry", {"metrics": "flow rate"}, "metrics"),
    ("telemetry/aggregate", {"bucket": "0m"}, "bucket"),
    ("telemetry/aggregate", {"bucket": "5w"}, "bucket"),
    ("telemetry/aggregate", {"bucket": "400d"}, "bucket"),
    ("telemetry/aggregate", {"bucket": "1s", "start": iso(T0),
                             "end": iso(T0 + timedelta(days=1))}, "bucket"),
    ("telemetry/aggregate", {"functions": "avg,median"}, "functions"),
    ("telemetry/export.csv", {"start": iso(T0), "end": iso(T0)}, "end"),
]


async def test_bad_input_is_refused_naming_the_field(api: Api, db_url: str) -> None:
    await seed(db_url, "W-1", [(T0, "pip", 1.0)])
    for route, query, field in BAD_INPUT:
        response = await api.admin.get(f"/devices/W-1/{route}", params=query)
        assert response.status_code == 422, (route, query, response.text)
        assert response.json()["error"]["details"]["field"] == field, (route, query)


async def test_unknown_and_foreign_devices_are_404(api: Api, db_url: str) -> None:
    await seed(db_url, "W-1", [(T0, "pip", 1.0)])
    await seed(db_url, "W-2", [(T0, "pip", 2.0)])
    assert (await api.admin.get("/devices/W-9/telemetry/latest")).status_code == 404
    scoped = api.client(key=await api.key("viewer", device_id="W-2"))
    assert (await scoped.get("/devices/W-1/telemetry/latest")).status_code == 404
    assert (await scoped.get("/devices/W-2/telemetry/latest")).status_code == 200
    fleet = (await scoped.get("/telemetry/latest")).json()["items"]
    assert [d["device_id"] for d in fleet] == ["W-2"], "a scoped key sees its device only"
    device = api.client(key=await api.key("device", device_id="W-1"))
    assert (await device.get("/devices/W-1/telemetry")).status_code == 403


async def test_latest_of_a_device_and_of_the_fleet(api: Api, db_url: str) -> None:
    await seed(db_url, "W-1", [(T0, "flow_rate", 2400.0), (T0 + timedelta(minutes=1),
                                                           "flow_rate", 2450.5),
                               (T0, "pip", 850.0), (T0, "mode", "auto")],
               tags=["pad-3"], status="online")
    await seed(db_url, "W-2", [(T0, "flow_rate", 1800.0)], tags=["pad-4"])
    await seed(db_url, "R-1", [(T0, "tank_level", 3.2)], device_type="rtu")
    latest = (await api.admin.get("/devices/W-1/telemetry/latest")).json()
    assert (latest["device_id"], latest["device_type"], latest["status"]) == \
        ("W-1", "esp", "online")
    assert {k: v["value"] for k, v in latest["metrics"].items()} == {
        "flow_rate": 2450.5, "pip": 850.0, "mode": "auto"}
    assert latest["metrics"]["flow_rate"]["time"] == iso(T0 + timedelta(minutes=1))
    only = (await api.admin.get("/devices/W-1/telemetry/latest",
                                params={"metrics": "pip"})).json()
    assert list(only["metrics"]) == ["pip"]

    def values(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {d["device_id"]: {k: v["value"] for k, v in d["metrics"].items()}
                for d in page["items"]}

    everything = (await api.admin.get("/telemetry/latest")).json()
    assert values(everything) == {"R-1": {"tank_level": 3.2}, "W-1": {
        "flow_rate": 2450.5, "pip": 850.0, "mode": "auto"}, "W-2": {"flow_rate": 1800.0}}
    assert everything["items"][1]["status"] == "online"
    esp = await api.admin.get("/telemetry/latest", params={"device_type": "esp",
                                                            "metrics": "flow_rate"})
    assert values(esp.json()) == {"W-1": {"flow_rate": 2450.5}, "W-2": {"flow_rate": 1800.0}}
    tagged = await api.admin.get("/telemetry/latest", params={"tag": "pad-4"})
    assert values(tagged.json()) == {"W-2": {"flow_rate": 1800.0}}
    first = (await api.admin.get("/telemetry/latest", params={"limit": 2})).json()
    second = (await api.admin.get("/telemetry/latest", params={
        "limit": 2, "cursor": first["next_cursor"]})).json()
    assert [d["device_id"] for d in first["items"] + second["items"]] == ["R-1", "W-1", "W-2"]
    assert second["next_cursor"] is None


async def test_the_fleet_page_is_what_its_model_writes_byte_for_byte(api: Api,
                                                                       db_url: str) -> None:
    """PostgreSQL writes the fleet's JSON (telemetry_json.LATEST_FLEET): it must be the
    documented model's own serialization, to the byte (times with Z and microseconds,
    whole floats with .0, escaped text, each device's own unit, nulls)."""
    await seed(db_url, "W-1", [(T0 + timedelta(microseconds=250_000), "flow_rate", 2400.0),
                               (T0 + timedelta(seconds=1, microseconds=1), "pip", 850.125),
                               (T0, "mode", 'say "hi" \\ \u00e9\t\u2713'),
                               (T0, "odd_metric", -0.001), (T0, "small", 0.000125)],
               status="online")
    await seed(db_url, "W-2", [(T0, "flow_rate", -12.0)], device_type="rtu")
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-3')")  # nothing yet
    await execute(db_url, "UPDATE devices SET last_seen = $1 WHERE device_id = 'W-1'",
                  T0 + timedelta(seconds=2, microseconds=5))
    await execute(db_url, "UPDATE telemetry_latest SET quality = 100 "
                  "WHERE metric = (SELECT id FROM metrics WHERE name = 'pip')")
    await execute(db_url, "INSERT INTO device_units (device, metric, unit) SELECT d.id, m.id, "
                  "'m\u00b3/\"d\"' FROM devices d, metrics m "
                  "WHERE d.device_id = 'W-1' AND m.name = 'odd_metric'")
    response = await api.admin.get("/telemetry/latest")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [d["device_id"] for d in items] == ["W-1", "W-2", "W-3"]
    assert items[0]["metrics"]["odd_metric"]["unit"] == 'm\u00b3/"d"'
    assert items[2]["metrics"] == {} and items[2]["last_seen"] is None
    assert response.content == \
        Page[DeviceLatest].model_validate_json(response.content).model_dump_json().encode()
    paged = await api.admin.get("/telemetry/latest", params={"limit": 2})
    assert paged.content == \
        Page[DeviceLatest].model_validate_json(paged.content).model_dump_json().encode()


def expected_buckets(rows: list[Row], metric: str, start: datetime, end: datetime,
                     width: timedelta) -> list[dict[str, Any]]:
    """The aggregates computed here, from the same rows."""
    buckets: dict[datetime, list[tuple[datetime, float]]] = defaultdict(list)
    for t, m, v in rows:
        if m == metric and start <= t < end:
            assert isinstance(v, float)
            buckets[ORIGIN + (t - ORIGIN) // width * width].append((t, v))
    found = []
    for b, points in sorted(buckets.items()):
        values = [v for _, v in sorted(points)]
        found.append({"bucket": iso(b), "avg": statistics.fmean(values), "min": min(values),
                      "max": max(values), "sum": sum(values), "count": len(values),
                      "first": values[0], "last": values[-1],
                      "stddev": statistics.stdev(values) if len(values) > 1 else None})
    return found


def close(got: list[dict[str, Any]], want: list[dict[str, Any]], functions: list[str]
          ) -> None:
    assert [g["bucket"] for g in got] == [w["bucket"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == {"bucket", *functions}
        for f in functions:
            assert g[f] == pytest.approx(w[f], rel=1e-9), (g["bucket"], f)


async def test_aggregates_equal_the_same_rows_computed_here(api: Api, db_url: str) -> None:
    # Every 7 s for 3 h 10 min: buckets of many widths, not aligned with the readings.
    rows = series(T0 - timedelta(minutes=10), timedelta(seconds=7), 1715,
                  {"flow_rate": 2500, "motor_temp": 80})
    await seed(db_url, "W-1", rows)
    all_functions = ["avg", "min", "max", "sum", "count", "first", "last", "stddev"]
    cases = [  # (bucket, start, end, functions, source)
        ("90s", T0 + timedelta(seconds=13), T0 + timedelta(minutes=50), all_functions, "raw"),
        ("1h", T0, T0 + timedelta(hours=3), ["avg", "min", "max", "sum", "count"],
         "rollup_1h"),
        ("2h", T0, T0 + timedelta(hours=4), ["avg", "count"], "rollup_1h"),
        ("15m", T0, T0 + timedelta(hours=2), ["avg", "max", "count"], "rollup_1m"),
        ("1m", T0, T0 + timedelta(minutes=40), ["avg", "min", "max", "sum", "count"],
         "rollup_1m"),  # the rollup's own rows, as with 1h on rollup_1h
        ("1h", T0 + timedelta(minutes=30), T0 + timedelta(hours=3), ["avg"], "rollup_1m"),
        ("1h", T0, T0 + timedelta(hours=3), ["avg", "stddev"], "raw"),
        ("1h", T0 + timedelta(seconds=1), T0 + timedelta(hours=3), ["sum"], "raw"),
    ]
    for bucket, start, end, functions, source in cases:
        response = await api.admin.get("/devices/W-1/telemetry/aggregate", params=params(
            metrics="flow_rate,motor_temp", bucket=bucket, start=start, end=end,
            functions=",".join(functions)))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["source"] == source, (bucket, start, functions)
        width = timedelta(seconds=body["bucket_seconds"])
        for metric in ("flow_rate", "motor_temp"):
            close(body["series"][metric], expected_buckets(rows, metric, start, end, width),
                  functions)


async def test_csv_export_reads_back_as_the_same_rows(api: Api, db_url: str) -> None:
    rows = series(T0, timedelta(seconds=1), 6000, {"flow_rate": 2500, "pip": 850})
    rows.append((T0 + timedelta(seconds=3), "mode", "auto, \"remote\""))
    await seed(db_url, "W-1", rows)
    await seed(db_url, "W-2", series(T0, timedelta(seconds=1), 10, {"pip": 1}))
    viewer = await api.user("viewer")
    async with viewer.stream("GET", "/devices/W-1/telemetry/export.csv", params=params(
            start=T0, end=T0 + timedelta(hours=2))) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        chunks = [chunk async for chunk in response.aiter_bytes()]
    assert len(chunks) > 1, "streamed in chunks"
    table = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert list(table[0]) == ["time", "metric", "value", "unit", "quality"]
    got = [(datetime.fromisoformat(r["time"]), r["metric"],
            r["value"] if r["metric"] == "mode" else float(r["value"])) for r in table]
    assert got == sorted(got, key=lambda r: r[0])
    assert sorted(got, key=repr) == sorted(rows, key=repr)
    part = await viewer.get("/devices/W-1/telemetry/export.csv", params=params(
        metrics="pip", start=T0, end=T0 + timedelta(seconds=2)))
    assert part.text.splitlines()[1:] == [f"{iso(t)},pip,{v!r},," for t, m, v in rows
                                          if m == "pip" and t < T0 + timedelta(seconds=2)]


def test_text_a_spreadsheet_would_run_is_defused_in_csv() -> None:
    assert spreadsheet_safe('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert spreadsheet_safe(" \u3000-1+2") == "' \u3000-1+2"  # spreadsheets skip the blanks
    assert spreadsheet_safe("\uff0b1") == "'\uff0b1"  # full-width plus
    assert spreadsheet_safe("'quoted") == "''quoted"  # so one leading ' is always ours
    assert [spreadsheet_safe(t) for t in ("running", "", " ", "a=1", "1-2")] == [
        "running", "", " ", "a=1", "1-2"]


HOSTILE_UNIT = "=cmd|' /C calc'!A0"
TEXTS = {"note": "ok\r=1+2", "link": '=HYPERLINK("http://x.example","y")', "tab": "\t=1+2",
         "spaced": "  +1+2", "wide": "\uff1d1+2", "at": "@SUM(A1)", "quote": "'kept",
         "state": "running"}


async def export(client: httpx.AsyncClient, device_id: str) -> bytes:
    response = await client.get(f"/devices/{device_id}/telemetry/export.csv")
    assert response.status_code == 200, response.text
    return response.content


async def test_csv_export_is_inert_in_a_spreadsheet_with_each_devices_own_units(
        api: Api, db_url: str, ingestor: ServiceProcess) -> None:
    """End to end (HTTP ingest, the ingestor, the export). W-A is the first to send
    `torque`, in a hostile unit, so the catalog holds that unit; W-B's export still
    shows its own, and every text cell of W-A's is inert."""
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-A'), ('W-B')")
    a = api.client(key=await api.key("device", device_id="W-A"))
    b = api.client(key=await api.key("device", device_id="W-B"))
    ts = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    posted = await a.post("/telemetry", json={"ts": ts, "telemetry": {
        "torque": {"value": -3.5, "unit": HOSTILE_UNIT}, "pip": -5.5, **TEXTS}})
    assert posted.status_code == 202, posted.text
    count = "SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM telemetry_text)"
    await wait_until(lambda: fetchval(db_url, count), lambda n: n == 10, what="W-A stored")
    posted = await b.post("/telemetry", json={"ts": ts, "telemetry": {
        "torque": {"value": 2, "unit": "N*m"}}})
    assert posted.status_code == 202, posted.text
    await wait_until(lambda: fetchval(db_url, count), lambda n: n == 11, what="W-B stored")
    assert await fetchval(db_url, "SELECT unit FROM metrics WHERE name = 'torque'") == \
        HOSTILE_UNIT, "the catalog has the first sender's unit"

    viewer = await api.user("viewer")
    body = await export(viewer, "W-A")
    # RFC 4180 line ends, so the bare CR inside a text is quoted, not a row break.
    assert body.count(b"\r\n") == 11 and body.endswith(b"\r\n")
    assert b',"ok\r=1+2",' in body
    table = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert table[0] == ["time", "metric", "value", "unit", "quality"]
    assert {tuple(r[1:]) for r in table[1:]} == {
        ("pip", "-5.5", "psi", ""),  # our numbers stay numbers, negative or not
        ("torque", "-3.5", "'" + HOSTILE_UNIT, ""),
        ("note", "ok\r=1+2", "", ""),  # quoted: one cell that starts with "o"
        ("link", "'" + TEXTS["link"], "", ""), ("tab", "'\t=1+2", "", ""),
        ("spaced", "'  +1+2", "", ""), ("wide", "'\uff1d1+2", "", ""),
        ("at", "'@SUM(A1)", "", ""), ("quote", "''kept", "", ""),
        ("state", "running", "", "")}
    # How a consumer undoes it: one leading ' off a text cell (a number never has one).
    assert {r[1]: r[2][1:] if r[2].startswith("'") else r[2] for r in table[1:]
            if r[1] in TEXTS} == TEXTS

    other = await export(viewer, "W-B")
    assert [r[1:4] for r in csv.reader(io.StringIO(other.decode(), newline=""))][1:] == [
        ["torque", "2.0", "N*m"]]
    # The latest values name each device's own unit too (a known metric: its canonical).
    latest = (await viewer.get("/devices/W-B/telemetry/latest")).json()["metrics"]
    assert latest["torque"]["unit"] == "N*m"
    fleet = {d["device_id"]: d["metrics"] for d in
             (await viewer.get("/telemetry/latest")).json()["items"]}
    assert fleet["W-B"]["torque"]["unit"] == "N*m"
    assert fleet["W-A"]["torque"]["unit"] == HOSTILE_UNIT and fleet["W-A"]["pip"]["unit"] == "psi"


async def test_exports_beyond_the_limit_wait_their_turn_as_503(api: Api, db_url: str) -> None:
    """Each export holds a connection while its client reads: the running ones are
    bounded, so the others are refused with Retry-After rather than draining the pool."""
    await seed(db_url, "W-1", [(T0, "pip", 850.0)])
    exports = api.app.state.resources.exports
    held = 0
    while not exports.locked():
        await exports.acquire()
        held += 1
    try:
        busy = await api.admin.get("/devices/W-1/telemetry/export.csv")
        assert busy.status_code == 503 and busy.headers["Retry-After"]
        assert (await api.admin.get("/devices")).status_code == 200
    finally:
        for _ in range(held):
            exports.release()
    assert (await api.admin.get("/devices/W-1/telemetry/export.csv")).status_code == 200
