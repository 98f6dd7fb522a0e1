"""The diagnostics service through the real pipeline: a device publishes over MQTT, the
ingestor stores and streams, the service diagnoses, commits, and publishes on
insa:diagnostics and insa/diagnostics/<device_id>."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable

import orjson
import pytest
import redis

from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess
from shared.mqtt import telemetry_topic
from shared.streams import DEAD, DIAGNOSTICS, TELEMETRY
from tests.utils.db import execute, fetch, fetchrow
from tests.utils.mqtt_client import Clients
from tests.utils.streams import Entry, range_entries
from tests.utils.waiting import wait_until

INTERVAL = 10.0
HEALTHY = 30  # readings before the fault


def closed_valve_well(device_id: str, count: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """A pump at its own operating point whose discharge gets blocked after HEALTHY
    readings: discharge pressure up, flow down, current down, motor warming."""
    rng = random.Random(seed)
    start = time.time() - count * INTERVAL - 60
    topic = telemetry_topic(device_id)
    out = []
    for n in range(count):
        blocked = min(1.0, max(0.0, (n - HEALTHY) / 5))
        values = {
            "vsd_frequency": 53.0 + rng.gauss(0, 0.02),
            "flow_rate": 1800 * (1 - 0.9 * blocked) + rng.gauss(0, 15),
            "pip": 950 * (1 + 0.05 * blocked) + rng.gauss(0, 4),
            "discharge_pressure": 2600 * (1 + 0.4 * blocked) + rng.gauss(0, 10),
            "motor_current": 52 * (1 - 0.25 * blocked) + rng.gauss(0, 0.3),
            "motor_temp": {"value": 185 + 30 * blocked + rng.gauss(0, 0.5), "unit": "degF"},
            "vibration": 0.4 + abs(rng.gauss(0, 0.02)),
        }
        out.append((topic, orjson.dumps({"ts": round((start + n * INTERVAL) * 1000),
                                         "seq": n, "telemetry": values})))
    return out


async def diagnoses(db_url: str, device_id: str) -> list[tuple[str, str, bool]]:
    rows = await fetch(db_url, "SELECT code, severity, cleared FROM diagnoses "
                               "WHERE device_id = $1 ORDER BY id", device_id)
    return [(r["code"], r["severity"], r["cleared"]) for r in rows]


async def judged_until(db_url: str, device_id: str) -> float:
    row = await fetchrow(db_url, "SELECT extract(epoch FROM last_ts) AS t FROM "
                                 "diagnostics_progress WHERE device_id = $1", device_id)
    return float(row["t"]) if row else 0.0


def last_ts(items: list[tuple[str, bytes]]) -> float:
    return orjson.loads(items[-1][1])["ts"] / 1000


async def test_a_blocked_discharge_is_diagnosed_once_and_published(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, redis_server: RunningRedis, db_url: str) -> None:
    diagnostics_factory()
    subscriber = clients.connect("insa-subscriber")
    subscriber.subscribe("insa/diagnostics/#")
    device = clients.device("well-7")
    items = closed_valve_well("well-7", HEALTHY + 20)
    device.publish_many(items)
    await wait_until(lambda: judged_until(db_url, "well-7"), lambda t: t >= last_ts(items),
                     what="every reading judged")
    events = await diagnoses(db_url, "well-7")
    raised = [e for e in events if e[0] == "closed_valve" and not e[2]]
    assert raised and raised[-1][1] == "critical", events
    # The motor passing its 100 degC limit as the flow stops is its own diagnosis; nothing
    # else may be raised above info.
    assert not [e for e in events if e[1] in ("warning", "critical")
                and e[0] not in ("closed_valve", "overheating")], events
    # Published: one MQTT message and one stream entry per event, in order.
    published = [orjson.loads(m.payload) for m in subscriber.wait_for_messages(len(events), 15)]
    assert [(p["code"], p["severity"], p["cleared"]) for p in published] == events
    assert all(m.topic == "insa/diagnostics/well-7" for m in subscriber.messages)
    entries = range_entries(redis.Redis.from_url(redis_server.url).xrange(DIAGNOSTICS))
    assert [orjson.loads(f[b"diagnosis"])["code"] for _, f in entries] == [e[0] for e in events]
    assert published[0]["action"] and published[0]["evidence"]["metrics"]


def stepped_well(device_id: str, count: int, to_hz: float) -> list[tuple[str, bytes]]:
    """A well at 55 Hz whose drive goes to `to_hz` after HEALTHY readings and stays."""
    rng = random.Random(3)
    start = time.time() - count * INTERVAL - 60
    out = []
    for n in range(count):
        r = (to_hz if n >= HEALTHY else 55.0) / 55.0
        values = {"vsd_frequency": 55.0 * r + rng.gauss(0, 0.02),
                  "flow_rate": 1800 * r + rng.gauss(0, 15), "pip": 950 + rng.gauss(0, 4),
                  "motor_current": 52 * (0.3 + 0.7 * r ** 2) + rng.gauss(0, 0.3)}
        out.append((telemetry_topic(device_id), orjson.dumps(
            {"ts": round((start + n * INTERVAL) * 1000), "seq": n, "telemetry": values})))
    return out


async def test_a_drive_is_judged_by_its_own_configured_range(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, db_url: str) -> None:
    # The same step to 62 Hz: past the range one well's drive is configured for (its
    # attributes, read from the database), an operator's setpoint on the other.
    for device_id, attributes in (("well-limited", {"vsd_min_hz": 40, "vsd_max_hz": 60}),
                                  ("well-free", {})):
        await execute(db_url, "INSERT INTO devices (device_id, metadata) VALUES ($1, $2::jsonb)",
                      device_id, orjson.dumps({"attributes": attributes}).decode())
    diagnostics_factory()

    async def all_judged(device_id: str, items: list[tuple[str, bytes]]) -> None:
        await wait_until(lambda: judged_until(db_url, device_id),
                         lambda t: t >= last_ts(items), what="every reading judged")

    for device_id in ("well-limited", "well-free"):
        items = stepped_well(device_id, HEALTHY + 15, to_hz=62.0)
        clients.device(device_id).publish_many(items)
        await all_judged(device_id, items)
    assert ("vsd_out_of_range", "critical", False) in await diagnoses(db_url, "well-limited")
    assert [e for e in await diagnoses(db_url, "well-free")
            if e[1] in ("warning", "critical")] == []


@pytest.mark.timeout(180)
async def test_kill_9_mid_fault_neither_loses_nor_repeats_the_diagnosis(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, db_url: str) -> None:
    """Killed after the fault began but before it was confirmed: the restarted service must
    rebuild the well's baseline from storage (a cold engine would learn the fault as normal)
    and raise the diagnosis exactly once."""
    service = diagnostics_factory()
    device = clients.device("well-8")
    items = closed_valve_well("well-8", HEALTHY + 25, seed=2)
    first, rest = items[:HEALTHY + 1], items[HEALTHY + 1:]
    device.publish_many(first)
    await wait_until(lambda: judged_until(db_url, "well-8"), lambda t: t >= last_ts(first),
                     what="the healthy part judged")
    assert await diagnoses(db_url, "well-8") == []
    service.stop(signal.SIGKILL)
    device.publish_many(rest)
    diagnostics_factory()
    await wait_until(lambda: judged_until(db_url, "well-8"), lambda t: t >= last_ts(rest),
                     what="every reading judged after the restart")
    events = await diagnoses(db_url, "well-8")
    raises = [e for e in events if e[0] == "closed_valve" and not e[2]]
    assert raises and raises[0][1] in ("warning", "critical"), events
    assert len({e[1] for e in raises}) == len(raises), f"raised twice: {events}"


async def test_a_poison_entry_is_dead_lettered_and_the_rest_is_judged(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, redis_server: RunningRedis, db_url: str) -> None:
    service = diagnostics_factory(INSA_DIAGNOSTICS_MAX_DELIVERIES="2")
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(TELEMETRY, {"device_id": "well-9", "ts": "not a number", "metrics": "{"})
    device = clients.device("well-9")
    items = closed_valve_well("well-9", 10, seed=3)
    device.publish_many(items)
    await wait_until(lambda: judged_until(db_url, "well-9"), lambda t: t >= last_ts(items),
                     what="the good entries judged")

    async def dead() -> list[Entry]:
        return list(range_entries(client.xrange(DEAD)))

    (_, fields), = await wait_until(dead, bool, timeout=30, what="the poison dead-lettered")
    assert fields[b"group"] == b"diagnostics" and b"not a telemetry entry" in fields[b"error"]

    async def counted() -> tuple[float, float]:  # on the service's own /metrics
        labels = f'group="diagnostics",stream="{TELEMETRY}"'  # sorted, as exposed
        return (service.metric("insa_stream_retries_total", labels),
                service.metric("insa_stream_dead_letters_total", labels))

    await wait_until(counted, lambda c: c == (1, 1), what="one retry and one dead letter")


async def test_two_replicas_split_the_wells_without_duplicate_diagnoses(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, broker: RunningBroker, db_url: str) -> None:
    for index in range(2):
        diagnostics_factory(INSA_DIAGNOSTICS_PARTITIONS="2",
                            INSA_DIAGNOSTICS_PARTITION=str(index),
                            INSA_DIAGNOSTICS_CONSUMER=f"diagnostics-{index}")
    wells = [f"well-{n}" for n in range(10, 16)]
    for n, well in enumerate(wells):
        clients.device(well).publish_many(closed_valve_well(well, HEALTHY + 12, seed=n))
    for well in wells:
        await wait_until(lambda w=well: diagnoses(db_url, w),  # type: ignore[misc]
                         lambda events: any(e[0] == "closed_valve" for e in events),
                         timeout=60, what=f"{well} diagnosed")
    for well in wells:
        events = await diagnoses(db_url, well)
        raises = [e for e in events if e[0] == "closed_valve" and not e[2]]
        assert len({e[1] for e in raises}) == len(raises), f"{well}: {events}"


async def test_a_redis_restart_mid_fault_is_survived(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, redis_server: RunningRedis, db_url: str) -> None:
    service = diagnostics_factory(INSA_DIAGNOSTICS_RETRY_MAX_DELAY_SECONDS="0.5")
    subscriber = clients.connect("insa-subscriber")
    subscriber.subscribe("insa/diagnostics/#")
    device = clients.device("well-17")
    items = closed_valve_well("well-17", HEALTHY + 20, seed=4)
    first, rest = items[:HEALTHY], items[HEALTHY:]
    device.publish_many(first)
    await wait_until(lambda: judged_until(db_url, "well-17"), lambda t: t >= last_ts(first),
                     what="the healthy part judged")
    redis_server.stop()
    device.publish_many(rest)  # the broker holds them for the ingestor, which waits
    redis_server.start()
    await wait_until(lambda: judged_until(db_url, "well-17"), lambda t: t >= last_ts(rest),
                     timeout=60, what="every reading judged after the restart")
    events = await diagnoses(db_url, "well-17")
    assert ("closed_valve", "critical", False) in events, events
    # Publication is at-least-once: an event sent just before Redis went away may be sent
    # again, and subscribers drop a repeated id. None is missing, and the order holds.
    first_seen: dict[int, str] = {}
    deadline = time.monotonic() + 20
    while len(first_seen) < len(events) and time.monotonic() < deadline:
        for message in subscriber.messages:
            event = orjson.loads(message.payload)
            first_seen.setdefault(event["id"], event["code"])
        await asyncio.sleep(0.1)
    assert list(first_seen.values()) == [e[0] for e in events]
    assert service.proc is not None and service.proc.poll() is None
