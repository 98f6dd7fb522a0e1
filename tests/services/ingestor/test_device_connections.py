"""Connection history (device_connections, migration 0016) through the real ingestor and
real MQTT status messages: one row per actual change of a device's status, at the status'
own time, saying what said so (the device or its Last Will, telemetry, its gateway, a
Sparkplug death, the inactivity timeout); and each device's history bounded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from devtools.stack.service_process import ServiceProcess
from services.ingestor import repository
from services.ingestor.batch import Parsed
from services.ingestor.rows import status_source
from shared.mqtt import child_topic, gateway_topic, status_topic, telemetry_topic
from shared.mqtt_connection import Message
from shared.readings import StatusChange
from tests.fixtures.api import Api
from tests.services.ingestor.test_sparkplug_host import DEVICE, born, edge, host  # noqa: F401
from tests.utils.db import execute, fetch, fetchval
from tests.utils.mqtt_client import Clients, Will
from tests.utils.sparkplug_edge import EdgeNode
from tests.utils.waiting import wait_until

HISTORY = """SELECT c.status, c.previous, c.source, c.ts FROM device_connections c
              JOIN devices d ON d.id = c.device WHERE d.device_id = $1 ORDER BY c.id"""


def changes(rows: list[asyncpg.Record]) -> list[tuple[str, str, str]]:
    return [(r["previous"], r["status"], r["source"]) for r in rows]


async def history(db_url: str, device_id: str, count: int) -> list[asyncpg.Record]:
    return await wait_until(lambda: fetch(db_url, HISTORY, device_id),
                            lambda r: len(r) >= count, what=f"{count} status changes")


async def test_only_actual_changes_are_recorded_with_their_time_and_source(
        ingestor: ServiceProcess, clients: Clients, db_url: str) -> None:
    pump = clients.device("W-1", will=Will(status_topic("W-1"), b"offline", qos=1,
                                           retain=True))
    status = status_topic("W-1")
    pump.publish(status, b'{"status": "online", "ts": "2026-11-22T10:00:00Z"}')
    pump.publish(status, b'{"status": "online", "ts": "2026-11-22T10:01:00Z"}')  # no change
    pump.publish(telemetry_topic("W-1"), b'{"pip": 850}')  # online already: no change
    pump.publish(status, b'{"status": "offline", "ts": "2026-11-22T10:02:00Z"}')
    pump.publish(status, b'{"status": "online", "ts": "2026-11-22T09:00:00Z"}')  # older: no
    await history(db_url, "W-1", 2)
    pump.publish(telemetry_topic("W-1"), b'{"pip": 851}')  # telemetry brings it back
    await history(db_url, "W-1", 3)
    pump.kill()  # the broker publishes the Last Will
    rows = await history(db_url, "W-1", 4)
    assert changes(rows) == [("unknown", "online", "device"), ("online", "offline", "device"),
                             ("offline", "online", "telemetry"),
                             ("online", "offline", "device")]
    assert [r["ts"] for r in rows[:2]] == [datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
                                           datetime(2026, 11, 22, 10, 2, tzinfo=UTC)]
    seen = await fetchval(db_url, "SELECT last_seen FROM devices WHERE device_id = 'W-1'")
    assert rows[2]["ts"] == seen  # telemetry's change is at its receive time
    assert len(await fetch(db_url, HISTORY, "W-1")) == 4  # and nothing more


async def test_the_inactivity_timeout_is_recorded(
        ingestor_factory: Callable[..., ServiceProcess], clients: Clients,
        db_url: str) -> None:
    ingestor_factory(INSA_INGESTOR_OFFLINE_AFTER_SECONDS="1")
    pump = clients.device("W-2")
    pump.publish(telemetry_topic("W-2"), b'{"pip": 850}')
    rows = await history(db_url, "W-2", 2)
    assert changes(rows) == [("unknown", "online", "telemetry"),
                             ("online", "offline", "timeout")]
    assert rows[1]["ts"] - rows[0]["ts"] >= timedelta(seconds=1)


async def test_a_gateways_will_is_its_childrens_offline(
        api: Api, ingestor: ServiceProcess, clients: Clients, db_url: str) -> None:
    created = await api.admin.post("/gateways", json={
        "gateway_id": "rtu-1", "provision": True, "auto_register": True})
    assert created.status_code == 201, created.text
    rtu = clients.new("rtu-1", created.json()["credentials"]["password"],
                      will=Will(gateway_topic("rtu-1", "status"), b"offline", qos=1))
    assert not rtu.connect().is_failure
    rtu.publish(gateway_topic("rtu-1", "telemetry"), b'{"W-3": [{"pip": 850}]}')
    rtu.publish(child_topic("rtu-1", "W-4", "status"), b"online")
    await history(db_url, "W-3", 1)
    await history(db_url, "W-4", 1)
    rtu.kill()
    assert changes(await history(db_url, "W-3", 2)) == [
        ("unknown", "online", "telemetry"), ("online", "offline", "gateway")]
    assert changes(await history(db_url, "W-4", 2)) == [
        ("unknown", "online", "gateway"), ("online", "offline", "gateway")]


async def test_a_sparkplug_birth_and_death_are_recorded(edge: EdgeNode,  # noqa: F811
                                                        db_url: str) -> None:
    await born(edge, db_url)
    await edge.kill()  # its Will: NDEATH
    assert changes(await history(db_url, DEVICE, 2)) == [
        ("unknown", "online", "sparkplug"), ("online", "offline", "sparkplug")]


async def test_each_device_keeps_its_newest_changes(db_url: str) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('W-5'), ('W-6')")
    conn = await asyncpg.connect(db_url)
    try:
        w5, w6 = [r["id"] for r in await conn.fetch(
            "SELECT id FROM devices ORDER BY device_id")]
        start = datetime(2026, 11, 22, tzinfo=UTC)
        await repository.set_status(conn, w6, True, start)
        for n in range(repository.CONNECTIONS_KEPT + 10):
            async with conn.transaction():
                await repository.set_status(conn, w5, n % 2 == 0,
                                            start + timedelta(seconds=n))
    finally:
        await conn.close()
    kept = await fetch(db_url, HISTORY, "W-5")
    assert len(kept) == repository.CONNECTIONS_KEPT
    assert kept[-1]["ts"] == start + timedelta(seconds=repository.CONNECTIONS_KEPT + 9)
    assert kept[0]["ts"] == start + timedelta(seconds=10)
    assert len(await fetch(db_url, HISTORY, "W-6")) == 1  # another device's is its own
    await execute(db_url, "DELETE FROM devices WHERE device_id = 'W-5'")
    assert await fetchval(db_url, "SELECT count(*) FROM device_connections") == 1


def test_a_status_is_attributed_to_what_sent_it() -> None:
    """The source rule alone (the Sparkplug path end to end needs the edge node's
    node_modules, which the test above fails without)."""
    now = datetime.now(UTC)

    def item(topic: str, gateway: str | None = None) -> Parsed:
        return Parsed(Message(topic, b"", 1, 1, False, 1), "W-1", now, "status",
                      status=StatusChange(False, now), gateway=gateway)

    assert status_source(item("insa/devices/W-1/status")) == "device"
    assert status_source(item("insa/gateways/rtu-1/devices/W-1/status", "rtu-1")) == "gateway"
    assert status_source(item("insa/gateways/rtu-1/status", "rtu-1")) == "gateway"
    assert status_source(item("spBv1.0/North/DDEATH/PadA/W1", "North:PadA")) == "sparkplug"
