"""HTTP ingest end to end: a device key posts readings, the API publishes them on the
device's telemetry topic, and the real ingestor stores them exactly once and streams
them. Refusals (another device, a reader, bad input) and a broker outage answer before
anything is published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess
from shared.streams import TELEMETRY
from tests.fixtures.api import Api
from tests.utils.db import execute, fetch
from tests.utils.streams import range_entries
from tests.utils.waiting import wait_until


def recent(seconds_ago: int) -> datetime:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).replace(microsecond=0)


async def stored(db_url: str) -> list[tuple[datetime, str, float]]:
    rows = await fetch(db_url, "SELECT t.time, m.name, t.value FROM telemetry t "
                               "JOIN metrics m ON m.id = t.metric ORDER BY t.time, m.name")
    return [(r["time"], r["name"], r["value"]) for r in rows]


async def stream(redis_server: RunningRedis) -> list[dict[str, Any]]:
    conn = redis.Redis.from_url(redis_server.url)
    try:
        entries = range_entries(await conn.xrange(TELEMETRY))
    finally:
        await conn.aclose()
    return [{"device_id": f[b"device_id"].decode(), "ts": int(f[b"ts"]),
             "metrics": orjson.loads(f[b"metrics"])} for _, f in entries]


async def test_a_posted_reading_is_stored_once_and_streamed(
        api: Api, db_url: str, redis_server: RunningRedis, ingestor: ServiceProcess) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-1')")
    device = api.client(key=await api.key("device", device_id="W-1"))
    ts = recent(60)
    reading = {"ts": ts.isoformat(), "seq": 1, "device_id": "W-1",
               "telemetry": {"flow_rate": 2500.5, "pip": {"value": 58.6, "unit": "bar"}}}
    first = await device.post("/telemetry", json=reading)
    assert first.status_code == 202, first.text
    assert first.json() == {"device_id": "W-1", "topic": "insa/devices/W-1/telemetry",
                            "readings": 1, "values": 2,
                            "timestamps": [ts.isoformat().replace("+00:00", "Z")]}
    rows = await wait_until(lambda: stored(db_url), lambda r: len(r) == 2, what="stored")
    assert rows[0][:2] == (ts, "flow_rate") and rows[0][2] == 2500.5
    assert rows[1][:2] == (ts, "pip") and rows[1][2] == pytest.approx(849.92, abs=0.01)

    # Posted again (a client retrying after a lost answer): streamed again, stored once.
    assert (await device.post("/telemetry", json=reading)).status_code == 202
    entries = await wait_until(lambda: stream(redis_server), lambda e: len(e) == 2,
                               what="both entries on insa:telemetry")
    assert all(e["device_id"] == "W-1" and e["ts"] == int(ts.timestamp() * 1000)
               for e in entries)
    assert entries[0]["metrics"]["flow_rate"] == 2500.5
    assert await stored(db_url) == rows

    # A batch (a backlog), and a reading without ts: stamped with the API's receive time.
    t30, t20 = recent(30), recent(20)
    batch = [{"ts": t30.isoformat(), "flow_rate": 2400.0},
             {"ts": int(t20.timestamp() * 1000), "flow_rate": 2410.0}]
    answer = await device.post("/telemetry/batch", json=batch)
    assert answer.status_code == 202 and answer.json()["readings"] == 2
    bare = await device.post("/telemetry", json={"flow_rate": 2420.0})
    assert bare.status_code == 202
    stamped = datetime.fromisoformat(bare.json()["timestamps"][0])
    assert abs(stamped - datetime.now(UTC)) < timedelta(seconds=30)
    flows = await wait_until(lambda: stored(db_url), lambda r: len(r) == 5, what="stored")
    assert [(t, v) for t, m, v in flows if m == "flow_rate"] == [
        (ts, 2500.5), (t30, 2400.0), (t20, 2410.0), (stamped, 2420.0)]
    assert ingestor.metric("insa_ingestor_rejects_total") == 0


REFUSED: list[tuple[str, Any, int, str | None]] = [  # path, body, status, field
    ("/telemetry", {"device_id": "W-2", "pip": 1}, 403, None),
    ("/telemetry/batch", [{"ts": 1_700_000_000, "pip": 1},
                          {"ts": 1_700_000_001, "device_id": "W-2", "pip": 1}], 403, None),
    ("/telemetry", b"{not json", 422, "body"),
    ("/telemetry", b'{"pip": NaN}', 422, "body"),
    ("/telemetry", [{"pip": 1}], 422, "body"),
    ("/telemetry", {}, 422, "body.telemetry"),
    ("/telemetry", {"telemetry": {"flow rate": 1}}, 422, "body.telemetry"),
    ("/telemetry", {"telemetry": {"pip": [1]}}, 422, "body.telemetry.pip"),
    ("/telemetry", {"ts": True, "pip": 1}, 422, "body.ts"),
    ("/telemetry", {"ts": "2999-01-01T00:00:00Z", "pip": 1}, 422, "body.ts"),
    ("/telemetry", {"pip": {"value": 1, "unit": "furlong"}}, 422, "body.telemetry.pip.unit"),
    ("/telemetry/batch", [{"ts": 1_700_000_000, "pip": 1}, {"pip": 2}], 422, "body[1].ts"),
    ("/telemetry/batch", [{"pip": 1}] * 1001, 422, "body"),
    ("/telemetry/batch", {"pip": 1}, 422, "body"),
    ("/telemetry", {"pip": "x" * 300_000}, 413, None),  # the route's body limit, unread
]


async def test_bad_or_foreign_readings_are_refused(api: Api, db_url: str) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-1'), ('W-2')")
    device = api.client(key=await api.key("device", device_id="W-1"))
    wrong = []
    for path, body, status, field in REFUSED:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        response = await device.post(path, content=content,
                                     headers={"Content-Type": "application/json"})
        error = response.json()["error"]
        if response.status_code != status or \
                (field is not None and error["details"]["field"] != field):
            wrong.append(f"{path} {content[:60]!r}: {response.status_code} {error}")
        elif field is not None:
            assert error["message"].startswith(field.removeprefix("body").lstrip(".")), error
    assert wrong == []


async def test_only_device_keys_may_post(api: Api, db_url: str) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-1')")
    viewer = await api.user("viewer")
    for client in (viewer, api.admin, api.client(key=await api.key("engineer"))):
        response = await client.post("/telemetry", json={"pip": 1})
        assert response.status_code == 403, response.text
    assert (await api.client().post("/telemetry", json={"pip": 1})).status_code == 401


async def test_broker_down_is_503(api: Api, db_url: str, broker: RunningBroker) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-1')")
    device = api.client(key=await api.key("device", device_id="W-1"))
    assert (await device.post("/telemetry", json={"pip": 1})).status_code == 202
    broker.stop()
    response = await device.post("/telemetry", json={"pip": 2})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
