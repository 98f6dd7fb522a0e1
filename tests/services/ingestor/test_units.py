"""Units at ingest (docs/payloads.md), through the real pipeline: values of known metrics
are stored and streamed in canonical units, each device's unit is kept per metric and
applies to its readings without one (also after a restart), and a unit that cannot
express a known metric rejects the message as `bad_unit`."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
import redis

from devtools.stack.servers import RunningRedis
from devtools.stack.service_process import ServiceProcess
from shared.mqtt import telemetry_topic
from shared.streams import TELEMETRY
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients
from tests.utils.streams import range_entries
from tests.utils.waiting import wait_until

STORED = """
    SELECT d.device_id, m.name, (extract(epoch FROM t.time) * 1000)::bigint AS ms, t.value
      FROM telemetry t JOIN devices d ON d.id = t.device JOIN metrics m ON m.id = t.metric"""
DEVICE_UNITS = """
    SELECT d.device_id, m.name, u.unit FROM device_units u
      JOIN devices d ON d.id = u.device JOIN metrics m ON m.id = u.metric"""
PSI_IN_KPA = 6.894757293168361


def stored(rows: list) -> dict[tuple[str, str, int], float]:
    return {(r["device_id"], r["name"], r["ms"]): r["value"] for r in rows}


def stream(redis_url: str) -> dict[tuple[str, int], dict[str, float]]:
    return {(f[b"device_id"].decode(), int(f[b"seq"])): orjson.loads(f[b"metrics"])
            for _, f in range_entries(redis.Redis.from_url(redis_url).xrange(TELEMETRY))}


async def test_two_devices_in_different_units_are_stored_canonical(
        ingestor_factory: Callable[..., ServiceProcess], clients: Clients,
        redis_server: RunningRedis, db_url: str) -> None:
    ingestor = ingestor_factory()
    t1 = (int(time.time()) - 3600) * 1000
    t2, t3, t4 = t1 + 1000, t1 + 2000, t1 + 3000
    a, b = clients.device("bridge-a"), clients.device("bridge-b")
    a.publish(telemetry_topic("bridge-a"), orjson.dumps({"ts": t1, "seq": 1, "telemetry": {
        "pip": {"value": 1000 * PSI_IN_KPA, "unit": "kPa"},
        "motor_temp": {"value": 212, "unit": "degF"},
        "torque": {"value": 5, "unit": "N*m"}}}))  # not a known metric: as sent
    b.publish(telemetry_topic("bridge-b"), orjson.dumps({"ts": t1, "seq": 1, "telemetry": {
        "pip": {"value": 900, "unit": "psi"}, "motor_temp": {"value": 85, "unit": "degC"}}}))
    await wait_until(lambda: fetch(db_url, STORED), lambda r: len(r) == 5,
                     what="the readings with units")
    # The second readings carry no unit: each is in its own device's last unit.
    a.publish(telemetry_topic("bridge-a"),
              orjson.dumps({"ts": t2, "seq": 2, "pip": 1100 * PSI_IN_KPA, "motor_temp": 194}))
    b.publish(telemetry_topic("bridge-b"),
              orjson.dumps({"ts": t2, "seq": 2, "pip": 950, "motor_temp": 90}))
    # A unit that cannot express a known metric: the whole message is refused.
    a.publish(telemetry_topic("bridge-a"), orjson.dumps({"ts": t3, "seq": 3, "telemetry": {
        "pip": {"value": 1, "unit": "degC"}, "motor_temp": 200}}))

    rows = stored(await wait_until(lambda: fetch(db_url, STORED), lambda r: len(r) == 9,
                                   what="the readings without units"))
    assert rows == {
        ("bridge-a", "pip", t1): pytest.approx(1000.0), ("bridge-a", "pip", t2):
            pytest.approx(1100.0),
        ("bridge-a", "motor_temp", t1): 100.0, ("bridge-a", "motor_temp", t2): 90.0,
        ("bridge-a", "torque", t1): 5.0,
        ("bridge-b", "pip", t1): 900.0, ("bridge-b", "pip", t2): 950.0,
        ("bridge-b", "motor_temp", t1): 85.0, ("bridge-b", "motor_temp", t2): 90.0}
    latest = await fetch(db_url, "SELECT d.device_id, m.name, l.value FROM telemetry_latest l "
                                 "JOIN devices d ON d.id = l.device "
                                 "JOIN metrics m ON m.id = l.metric WHERE m.name = 'pip'")
    assert {r["device_id"]: r["value"] for r in latest} == {
        "bridge-a": pytest.approx(1100.0), "bridge-b": 950.0}
    units = await fetch(db_url, DEVICE_UNITS)
    assert {(r["device_id"], r["name"], r["unit"]) for r in units} == {
        ("bridge-a", "pip", "kPa"), ("bridge-a", "motor_temp", "degF"),
        ("bridge-a", "torque", "N*m"),  # stored as sent, labelled with its device's unit
        ("bridge-b", "pip", "psi"), ("bridge-b", "motor_temp", "degC")}
    catalog = await fetch(db_url, "SELECT name, unit FROM metrics")
    assert {(r["name"], r["unit"]) for r in catalog} == {
        ("pip", "psi"), ("motor_temp", "degC"), ("torque", "N*m")}

    entries = stream(redis_server.url)
    assert entries == {
        ("bridge-a", 1): {"pip": pytest.approx(1000.0), "motor_temp": 100.0, "torque": 5.0},
        ("bridge-a", 2): {"pip": pytest.approx(1100.0), "motor_temp": 90.0},
        ("bridge-b", 1): {"pip": 900.0, "motor_temp": 85.0},
        ("bridge-b", 2): {"pip": 950.0, "motor_temp": 90.0}}

    rejects = await fetch(db_url, "SELECT device_id, reason, detail FROM rejected_messages")
    assert [(r["device_id"], r["reason"], r["detail"]) for r in rejects] == [
        ("bridge-a", "bad_unit", "'degC' cannot express pip (canonical psi)")]
    assert ingestor.metric("insa_ingestor_rejects_total", 'reason="bad_unit"') == 1
    assert not await fetch(db_url, "SELECT 1 FROM telemetry WHERE time = to_timestamp($1)",
                           t3 / 1000)

    # A restarted ingestor reads each device's units back from device_units.
    ingestor.stop()
    ingestor_factory()
    a.publish(telemetry_topic("bridge-a"), orjson.dumps({"ts": t4, "seq": 4, "motor_temp": 212}))
    b.publish(telemetry_topic("bridge-b"), orjson.dumps({"ts": t4, "seq": 4, "motor_temp": 95}))
    rows = stored(await wait_until(lambda: fetch(db_url, STORED), lambda r: len(r) == 11,
                                   what="the readings after the restart"))
    assert rows[("bridge-a", "motor_temp", t4)] == 100.0
    assert rows[("bridge-b", "motor_temp", t4)] == 95.0
