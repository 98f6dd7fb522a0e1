"""The well page over real HTTP against the real API, PostgreSQL, Redis and broker: each
section from data the real ingestor stored from real MQTT messages (readings with units,
a refused message, status changes, a command answered by the device), or seeded as the
diagnostics and alert engines write it; the trend data's point budget and aggregates over
30 days of minute readings; 404 pages, a viewer's limits, a key scoped to another device,
and nothing loaded from elsewhere."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from devtools.stack.service_process import ServiceProcess
from services.api import telemetry_queries as q
from services.api.console import well_queries as wq
from services.api.console import well_series
from services.api.security.principal import Principal
from shared.diagnosis.catalog import action_for
from shared.errors import NotFound
from shared.mqtt import status_topic, telemetry_topic
from tests.fixtures.api import ADMIN_PASSWORD, Api
from tests.utils.console import console_client
from tests.utils.db import execute, fetch, fetchval
from tests.utils.mqtt_client import Clients, Will
from tests.utils.waiting import wait_until

OUTSIDE = re.compile(r"""(?:src|href|action|hx-get|hx-post)=["'](?:https?:)?//""")
INLINE = re.compile(r"""<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=""", re.I)
SECTIONS = ("latest", "diagnoses", "alerts", "commands", "rejects", "connections")


async def well(api: Api, device_id: str = "W-7") -> None:
    created = await api.admin.post("/devices", json={
        "device_id": device_id, "name": "Well 7, pad 3", "tags": ["field=north", "pad-3"],
        "metadata": {"site": "North", "pump_model": "REDA D460N"},
        "attributes": {"motor_rated_current": 52, "vsd_max_hz": 60}})
    assert created.status_code == 201, created.text


async def seed_diagnoses(db_url: str, device_id: str) -> None:
    """As the diagnostics service writes them: an event, and what is open now."""
    now = datetime.now(UTC)
    for ts, code, severity, cleared in ((now - timedelta(hours=5), "overload", "warning", False),
                                        (now - timedelta(hours=4), "overload", "warning", True),
                                        (now - timedelta(hours=1), "gas_lock", "critical", False)):
        await execute(db_url, "INSERT INTO diagnoses (device_id, ts, code, severity, cleared, "
                              "confidence, evidence, action) VALUES ($1, $2, $3, $4, $5, 0.86, "
                              "$6, $7)", device_id, ts, code, severity, cleared,
                      orjson.dumps({"intake_pressure_trend_psi_h": 42.5}).decode(),
                      action_for(code, severity))
    last = await fetchval(db_url, "SELECT max(id) FROM diagnoses")
    await execute(db_url, "INSERT INTO open_diagnoses (device_id, code, severity, confidence, "
                          "evidence, since, diagnosis_id) VALUES ($1, 'gas_lock', 'critical', "
                          "0.86, '{\"intake_pressure_trend_psi_h\": 42.5}', $2, $3)",
                  device_id, now - timedelta(hours=1), last)


async def seed_alerts(db_url: str, device_id: str) -> tuple[int, int]:
    """A resolved alert that began later than the open one: open still comes first."""
    rule = await fetchval(db_url, "INSERT INTO rules (name, definition) VALUES ('motor hot', "
                                  "'{}') RETURNING id")
    now = datetime.now(UTC)
    ids = []
    for state, since in (("firing", now - timedelta(hours=3)),
                         ("resolved", now - timedelta(hours=1))):
        ids.append(await fetchval(
            db_url, "INSERT INTO alerts (rule_id, device_id, state, severity, value, threshold, "
                    "message, active_since, fire_at, resolved_at) VALUES ($1, $2, $3, "
                    "'critical', 104.2, '> 100', $4, $5, $5, $6) RETURNING id", rule, device_id,
            state, f"{device_id}: motor {state}", since,
            now if state == "resolved" else None))
    return ids[0], ids[1]


async def fragment(client: httpx.AsyncClient, device_id: str, part: str) -> str:
    answer = await client.get(f"/console/wells/{device_id}/{part}",
                              headers={"HX-Request": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


async def test_the_page_shows_each_section_from_the_pipeline(
        api: Api, clients: Clients, ingestor: ServiceProcess, db_url: str) -> None:
    await well(api)
    assert (await api.admin.post("/devices/W-7/config", json={"sample_seconds": 5})
            ).status_code == 202
    pump = clients.device("W-7", will=Will(status_topic("W-7"), b"offline", qos=1, retain=True))
    assert not pump.subscribe("insa/devices/W-7/command").is_failure
    pump.publish(status_topic("W-7"), b"online")
    pump.publish(telemetry_topic("W-7"),
                 b'{"pip": 850, "motor_temp": {"value": 200, "unit": "degF"}}')
    pump.publish(telemetry_topic("W-7"), b'{"pip": "high"}')  # text for a number: refused
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM rejected_messages"), bool,
                     what="the refused message")
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM telemetry_latest"),
                     lambda r: len(r) == 2, what="two latest values")
    await seed_diagnoses(db_url, "W-7")
    firing, resolved = await seed_alerts(db_url, "W-7")
    admin = await console_client(api, "admin", ADMIN_PASSWORD)

    page = await admin.get("/console/wells/W-7")
    assert page.status_code == 200, page.text
    text = page.text
    for shown in ("Well 7, pad 3", "North", "field=north", "pad-3", 'class="status online"',
                  "pip", "850", "motor_temp", "93.3333", "degC", "psi",
                  "motor_rated_current", "52 A", "60 Hz", "REDA D460N",
                  'value="pip"', 'data-series="/console/wells/W-7/series"'):
        assert shown in text, shown
    for part in SECTIONS[1:]:
        assert f'hx-get="/console/wells/W-7/{part}"' in text, part

    diagnoses = await fragment(admin, "W-7", "diagnoses")
    assert "Open now" in diagnoses and "Gas lock" in diagnoses
    assert action_for("gas_lock", "critical") in diagnoses
    assert "intake_pressure_trend_psi_h" in diagnoses and "42.5" in diagnoses
    assert diagnoses.count("Motor overload") == 2 and "cleared" in diagnoses

    alerts = await fragment(admin, "W-7", "alerts")
    assert alerts.index(f"/console/alarms/{firing}") < alerts.index(f"/console/alarms/{resolved}")

    rejects = await fragment(admin, "W-7", "rejects")
    assert "text_for_number" in rejects and "high" in rejects

    sent = await admin.post("/console/wells/W-7/commands", headers={
        "HX-Request": "true", "X-CSRF-Token": await token(admin)},
        data={"name": "restart", "params": '{"delay_seconds": 5}', "timeout_seconds": "60"})
    assert sent.status_code == 200, sent.text
    assert "sent (pending)" in sent.text
    [message] = await asyncio.to_thread(pump.wait_for_messages, 1)
    command = orjson.loads(message.payload)
    assert command["name"] == "restart" and command["params"] == {"delay_seconds": 5}
    pump.publish("insa/devices/W-7/command/ack", orjson.dumps(
        {"id": command["id"], "status": "done", "result": {"uptime_s": 0}}))
    commands = await wait_until(lambda: fragment(admin, "W-7", "commands"),
                                lambda t: 'class="cmd done"' in t, what="the answer shown")
    assert "uptime_s" in commands and "user:admin" in commands
    assert "Version 1" in commands and "sample_seconds" in commands

    pump.kill()  # the broker publishes its Last Will
    connections = await wait_until(lambda: fragment(admin, "W-7", "connections"),
                                   lambda t: 'class="status offline"' in t,
                                   what="the Last Will in the history")
    assert connections.count("the device (status or Last Will)") == 2
    assert connections.index("offline") < connections.index('class="status online"')

    for part in ("", *(f"/{p}" for p in SECTIONS)):
        answer = await admin.get(f"/console/wells/W-7{part}")
        assert not OUTSIDE.search(answer.text), f"{part}: something from another origin"
        assert not INLINE.search(answer.text), f"{part}: inline script or style"
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def token(client: httpx.AsyncClient) -> str:
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', (await client.get("/console/")).text)
    assert found
    return found.group(1)


def minute_data(now: datetime, days: int) -> list[tuple[datetime, str, float]]:
    """A reading a minute for `days` days before `now`, of two metrics."""
    rows: list[tuple[datetime, str, float]] = []
    for i in range(1, days * 1440 + 1):
        at = now - timedelta(minutes=i)
        rows += [(at, "pip", 800.0 + i % 97), (at, "flow_rate", 2000.0 - (i * 7) % 311)]
    return rows


def expected(rows: list[tuple[datetime, str, float]], metric: str, start: datetime,
             width: timedelta) -> dict[str, float]:
    values = [v for t, m, v in rows if m == metric and start <= t < start + width]
    return {"avg": sum(values) / len(values), "min": min(values), "max": max(values),
            "count": len(values)}


async def series(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await client.get("/console/wells/W-7/series", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    found: dict[str, Any] = answer.json()
    return found


async def test_the_series_stays_within_the_width_with_the_right_aggregates(
        api: Api, db_url: str) -> None:
    from tests.utils.telemetry import seed

    await well(api)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = minute_data(now, 30)
    await seed(db_url, "W-7", rows)
    # As the ingestor catalogues a known metric: its canonical unit.
    await execute(db_url, "UPDATE metrics SET unit = 'psi' WHERE name = 'pip'")
    admin = await console_client(api, "admin", ADMIN_PASSWORD)

    for width, bucket in ((800, 3600), (300, 3 * 3600)):
        got = await series(admin, metrics="pip,flow_rate", range="30d", width=width)
        assert got["source"] == "rollup_1h" and got["bucket_seconds"] == bucket
        for metric in ("pip", "flow_rate"):
            s = got["series"][metric]
            assert 0 < len(s["t"]) <= width and len(s["avg"]) == len(s["t"])
            middle = len(s["t"]) // 2
            start = datetime.fromtimestamp(s["t"][middle], UTC)
            want = expected(rows, metric, start, timedelta(seconds=bucket))
            assert s["avg"][middle] == pytest.approx(want["avg"])
            assert (s["min"][middle], s["max"][middle], s["count"][middle]) == (
                want["min"], want["max"], want["count"])
    assert got["series"]["pip"]["unit"] == "psi"

    day = await series(admin, metrics="pip", range="24h", width=1000)
    assert day["source"] == "rollup_1m" and day["bucket_seconds"] == 120
    assert len(day["series"]["pip"]["t"]) <= 1000

    hour = await series(admin, metrics="pip", range="1h", width=400)
    raw = hour["series"]["pip"]
    assert hour["source"] == "raw" and "min" not in raw
    begin, until = (datetime.fromtimestamp(hour[k], UTC) for k in ("start", "end"))
    assert until - begin == timedelta(hours=1)
    stored = sorted((t, v) for t, m, v in rows if m == "pip" and begin <= t < until)
    assert len(stored) >= 59
    assert [(datetime.fromtimestamp(t, UTC), v) for t, v in zip(raw["t"], raw["avg"],
                                                                 strict=True)] == stored

    custom = await series(admin, metrics="pip", start=(now - timedelta(days=3)).isoformat(),
                          end=(now - timedelta(days=2)).isoformat(), width=2000)
    assert custom["source"] == "raw" and len(custom["series"]["pip"]["t"]) == 1440

    # The target: a 30-day chart's data in p95 <= 100 ms. The queries are held to it; the
    # whole request (session, account, device) only to a bound that a machine busy with
    # other tests still meets.
    res = api.app.state.resources
    dev = await q.device(res.pool, Principal("user", 1, "admin", "admin"), "W-7")
    assert await p95(lambda: well_series.series(res.pool, dev, ["pip"], now - timedelta(
        days=30), now, 1200)) <= 0.1
    assert await p95(lambda: series(admin, metrics="pip", range="30d", width=1200)) <= 0.3


async def p95(call: Callable[[], Awaitable[object]], times: int = 40) -> float:
    timings = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        timings.append(time.perf_counter() - started)
    return sorted(timings)[int(times * 0.95) - 1]


async def test_a_gap_breaks_the_line_within_the_budget(api: Api, db_url: str) -> None:
    from tests.utils.telemetry import seed

    await well(api)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [r for r in minute_data(now, 7) if not now - timedelta(days=3) <= r[0] < now -
            timedelta(days=2)]  # a day without readings
    await seed(db_url, "W-7", rows)
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    got = (await series(admin, metrics="pip", range="7d", width=500))["series"]["pip"]
    assert len(got["t"]) <= 500 and got["avg"].count(None) == 1


async def test_unknown_wells_and_bad_input_are_readable_pages(api: Api) -> None:
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    for part in ("", *(f"/{p}" for p in SECTIONS), "/series?metrics=pip"):
        answer = await admin.get(f"/console/wells/W-nowhere{part}")
        assert answer.status_code == 404, part
        assert "Not found" in answer.text and "W-nowhere" in answer.text
    await well(api)
    for bad in ("metrics=pip&width=5", "metrics=pip&range=2y", "metrics=a%20b",
                "metrics=pip&start=2026-01-01T00:00:00Z&end=2025-01-01T00:00:00Z"):
        answer = await admin.get(f"/console/wells/W-7/series?{bad}")
        assert answer.status_code == 422, bad
    # Dates a range or a chart's grid would carry past what a datetime holds.
    for bad, says in (("range=7d&end=0001-01-02T00:00:00Z", "end: too early for the range"),
                      ("range=30d&end=9999-12-31T23:30:00Z", "end: too late to chart")):
        answer = await admin.get(f"/console/wells/W-7/series?metrics=pip&{bad}")
        assert answer.status_code == 422 and says in answer.text, (bad, answer.text)


async def test_a_viewer_sees_no_command_form_and_may_not_send(api: Api, db_url: str) -> None:
    await well(api)
    await api.user("viewer", "vera")
    viewer = await console_client(api, "vera")
    assert (await viewer.get("/console/wells/W-7")).status_code == 200
    section = await fragment(viewer, "W-7", "commands")
    assert "command-form" not in section and "No command sent yet" in section
    refused = await viewer.post("/console/wells/W-7/commands", headers={
        "X-CSRF-Token": await token(viewer)}, data={"name": "restart"})
    assert refused.status_code == 403 and "may not commands:send" in refused.text
    assert await fetch(db_url, "SELECT 1 FROM commands") == []


@pytest.mark.parametrize(("form", "field", "says"), [
    ({"name": "restart", "params": "{not json"}, "params", "not JSON"),
    ({"name": "restart", "params": "[1, 2]"}, "params", "a JSON object"),
    ({"name": "bad name!"}, "name", "pattern"),
    ({"name": "restart", "timeout_seconds": "soon"}, "timeout_seconds", "number"),
    ({"name": "restart", "params": orjson.dumps({"x": "y" * 17_000}).decode()}, "params",
     "bytes of JSON"),
])
async def test_a_bad_command_is_answered_at_its_field(api: Api, db_url: str,
                                                      form: dict[str, str], field: str,
                                                      says: str) -> None:
    await well(api)
    await api.user("operator", "olga")
    operator = await console_client(api, "olga")
    assert "command-form" in await fragment(operator, "W-7", "commands")
    answer = await operator.post("/console/wells/W-7/commands", headers={
        "HX-Request": "true", "X-CSRF-Token": await token(operator)}, data=form)
    assert answer.status_code == 422, answer.text
    label = re.search(rf'<label[^>]*>[^<]*<(?:input|textarea) name="{field}".*?</label>',
                      answer.text, re.S)
    assert label, answer.text
    error = re.search(r'<span class="field-error">([^<]*)</span>', label.group(0))
    assert error and says in error.group(1), label.group(0)
    assert await fetch(db_url, "SELECT 1 FROM commands") == []


async def test_a_key_scoped_to_another_device_sees_nothing_of_this_well(api: Api) -> None:
    await well(api)
    res = api.app.state.resources
    other = Principal("key", 1, "pump-key", "viewer", device_id="W-other")
    mine = Principal("key", 2, "w7-key", "viewer", device_id="W-7")
    for section in (wq.header, wq.latest, wq.open_diagnoses, wq.well_alerts,
                    wq.well_rejects):
        with pytest.raises(NotFound):
            await section(res, other, "W-7")
        await section(res, mine, "W-7")
    for paged in (wq.diagnosis_history, wq.well_commands, wq.connections):
        with pytest.raises(NotFound):
            await paged(res, other, "W-7", None)
        await paged(res, mine, "W-7", None)
    with pytest.raises(NotFound):
        await q.device(res.pool, other, "W-7")  # what /series and every fragment ask first


async def test_older_pages_of_diagnoses_and_connections(api: Api, db_url: str) -> None:
    await well(api)
    now = datetime.now(UTC)
    await execute(db_url, "INSERT INTO diagnoses (device_id, ts, code, severity, cleared, "
                          "confidence, action) SELECT 'W-7', "
                          "$1::timestamptz - make_interval(mins => n), "
                          "'anomaly', 'info', false, 0.5, 'look at the trend' "
                          "FROM generate_series(1, 25) AS n", now)
    await execute(db_url, "INSERT INTO device_connections (device, ts, status, previous, "
                          "source) SELECT d.id, $1::timestamptz - make_interval(mins => n), "
                          "CASE WHEN n % 2 = 0 THEN 'online' ELSE 'offline' END, "
                          "CASE WHEN n % 2 = 0 THEN 'offline' ELSE 'online' END, 'timeout' "
                          "FROM devices d, generate_series(1, 35) AS n "
                          "WHERE d.device_id = 'W-7' ORDER BY n DESC", now)
    admin = await console_client(api, "admin", ADMIN_PASSWORD)
    for part, first, rest, row in (("diagnoses", wq.DIAGNOSES_PAGE, 5, "Statistical anomaly"),
                                   ("connections", wq.CONNECTIONS_PAGE, 5, "silence")):
        page = await fragment(admin, "W-7", part)
        assert page.count(row) == first and "← Newest" not in page
        older = re.search(rf'hx-get="(/console/wells/W-7/{part}\?cursor=[^"]+)"', page)
        assert older, page
        second = await admin.get(older.group(1).replace("&amp;", "&"))
        assert second.status_code == 200
        assert second.text.count(row) == rest and "← Newest" in second.text
        assert "Older →" not in second.text
        bad = await admin.get(f"/console/wells/W-7/{part}?cursor=nonsense")
        assert bad.status_code == 422 and "cursor" in bad.text
