"""The Sparkplug B host in the real ingestor against an independent edge node (Eclipse
Tahu's JS codec over mqtt.js, tests/tools/sparkplug_edge): STATE, births, aliases, data,
historical/transient/null metrics, seq gaps and rebirth, stale and current deaths, and
commands from the API as DCMD."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.sparkplug_edge import EdgeNode
from tests.utils.waiting import wait_until

HOST = "insa-host"
NODE = "North:PadA"  # the gateway of group North, edge node PadA
DEVICE = "North:PadA:W1"
STORED = """SELECT m.name, t.value, t.time FROM telemetry t JOIN metrics m ON m.id = t.metric
            JOIN devices d ON d.id = t.device WHERE d.device_id = $1 ORDER BY m.name, t.time"""
LATEST = """SELECT m.name, l.value FROM telemetry_latest l JOIN metrics m ON m.id = l.metric
            JOIN devices d ON d.id = l.device WHERE d.device_id = $1 ORDER BY m.name"""


def now_ms() -> int:
    return int(time.time() * 1000)


def bd_seq(value: int) -> dict[str, Any]:
    return {"timestamp": now_ms(), "metrics": [{"name": "bdSeq", "type": "UInt64",
                                                "value": value}]}


def nbirth(bd: int) -> dict[str, Any]:
    return {"timestamp": now_ms(), "seq": 0, "metrics": [
        {"name": "bdSeq", "type": "UInt64", "value": bd},
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": False},
        {"name": "Cabinet/Temperature", "alias": 1, "type": "Float", "value": 31.5,
         "properties": {"engUnit": {"type": "String", "value": "degC"}}}]}


def dbirth(seq: int) -> dict[str, Any]:
    return {"timestamp": now_ms(), "seq": seq, "metrics": [
        {"name": "Motor/Current", "alias": 10, "type": "Float", "value": 41.5,
         "properties": {"insa_metric": {"type": "String", "value": "motor_current"},
                        "engUnit": {"type": "String", "value": "A"}}},
        {"name": "Intake/Pressure", "alias": 11, "type": "Double", "value": 58.6,
         "properties": {"insa_metric": {"type": "String", "value": "pip"},
                        "engUnit": {"type": "String", "value": "bar"}}},
        {"name": "Offset", "alias": 12, "type": "Int32", "value": -5},
        {"name": "Speed/Setpoint", "alias": 13, "type": "Float", "value": 50.0}]}


def ddata(seq: int, *metrics: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": now_ms(), "seq": seq, "metrics": list(metrics)}


def by_alias(alias: int, value: Any, **flags: Any) -> dict[str, Any]:
    """A DATA metric by alias only, without its datatype (the birth gave both)."""
    return {"alias": alias, "type": "Float", "value": value, "omitDatatype": True, **flags}


@pytest.fixture
async def host(ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker
               ) -> ServiceProcess:
    return ingestor_factory(INSA_INGESTOR_SPARKPLUG_HOST_ID=HOST,
                            INSA_INGESTOR_SPARKPLUG_PASSWORD=broker.credentials["insa-sparkplug"],
                            INSA_INGESTOR_SPARKPLUG_REORDER_TIMEOUT_SECONDS="0.5",
                            INSA_INGESTOR_SPARKPLUG_REBIRTH_MIN_INTERVAL_SECONDS="0")


@pytest.fixture
async def edge(api: Api, broker: RunningBroker, host: ServiceProcess
               ) -> AsyncIterator[EdgeNode]:
    """Edge node North/PadA, registered as a Sparkplug gateway that registers its devices,
    connected with the credentials the API gave it (its Will: NDEATH, bdSeq 0)."""
    created = await api.admin.post("/gateways", json={
        "gateway_id": NODE, "protocol": "sparkplug", "auto_register": True, "provision": True})
    assert created.status_code == 201, created.text
    password = created.json()["credentials"]["password"]
    async with await EdgeNode.start() as node:
        await node.connect(broker.port, client_id=NODE, username=NODE, password=password,
                           will={"topic": "spBv1.0/North/NDEATH/PadA", "payload": bd_seq(0),
                                 "qos": 1, "retain": False})
        await node.subscribe("spBv1.0/North/NCMD/PadA")
        await node.subscribe("spBv1.0/North/DCMD/PadA/+")
        yield node


async def born(edge: EdgeNode, db_url: str) -> None:
    await edge.publish("spBv1.0/North/NBIRTH/PadA", nbirth(0))
    await edge.publish("spBv1.0/North/DBIRTH/PadA/W1", dbirth(1))
    await wait_until(lambda: fetch(db_url, LATEST, DEVICE), lambda r: len(r) == 4,
                     what="the device's birth values")


async def test_the_host_announces_its_state_online_and_offline_when_it_stops(
        edge: EdgeNode, host: ServiceProcess) -> None:
    # Retained: an edge node that connects later learns the host is online.
    await edge.subscribe(f"spBv1.0/STATE/{HOST}", qos=1)
    online = await edge.next_message()
    assert online.retain and online.json["online"] is True
    assert abs(online.json["timestamp"] - now_ms()) < 60_000
    await asyncio.to_thread(host.stop)  # an intentional stop says so, when it happens
    offline = await edge.next_message(topic=f"spBv1.0/STATE/{HOST}")
    assert offline.json["online"] is False
    assert offline.json["timestamp"] >= online.json["timestamp"]
    # ... and nothing after it: the STATE kept for the next node is offline.
    await edge.subscribe("spBv1.0/STATE/+", qos=1)
    while not (retained := await edge.next_message(topic=f"spBv1.0/STATE/{HOST}")).retain:
        pass  # a copy of the live one first, on some brokers' overlapping subscriptions
    assert retained.json == offline.json


async def test_births_aliases_and_data_are_stored_as_the_devices_readings(
        edge: EdgeNode, db_url: str) -> None:
    await born(edge, db_url)
    old = now_ms() - 3_600_000
    await edge.publish("spBv1.0/North/DDATA/PadA/W1", ddata(
        2, by_alias(10, 42.0),
        {"alias": 11, "type": "Double", "value": 50.0, "omitDatatype": True,
         "isHistorical": True, "timestamp": old},
        {"alias": 12, "type": "Int32", "value": -7, "omitDatatype": True, "isTransient": True},
        {"alias": 13, "type": "Float", "value": None, "isNull": True, "omitDatatype": True}))
    stored = await wait_until(lambda: fetch(db_url, STORED, DEVICE),
                              lambda r: len(r) == 6, what="six stored values")
    values = [(r["name"], round(r["value"], 3)) for r in stored]
    # Units from engUnit (bar -> psi), names from insa_metric, Int32 -5 signed.
    assert values == [("Offset", -5.0), ("Speed.Setpoint", 50.0),
                      ("motor_current", 41.5), ("motor_current", 42.0),
                      ("pip", 725.189), ("pip", 849.921)], values
    latest = {r["name"]: round(r["value"], 2) for r in await fetch(db_url, LATEST, DEVICE)}
    assert latest["pip"] == 849.92, "a historical value is never the latest"
    assert latest["motor_current"] == 42.0
    node_values = await fetch(db_url, LATEST, NODE)
    assert [(r["name"], r["value"]) for r in node_values] == [("Cabinet.Temperature", 31.5)]
    gateway = await fetch(db_url, "SELECT gateway_id FROM devices WHERE device_id = $1",
                          DEVICE)
    assert gateway[0]["gateway_id"] == NODE


async def test_a_seq_gap_or_an_unknown_alias_asks_for_a_rebirth(
        edge: EdgeNode, db_url: str) -> None:
    await born(edge, db_url)
    await edge.publish("spBv1.0/North/DDATA/PadA/W1", ddata(3, by_alias(10, 43.0)))  # 2 lost
    rebirth = await edge.next_message()
    assert rebirth.topic == "spBv1.0/North/NCMD/PadA"
    assert rebirth.payload is not None
    [metric] = rebirth.payload["metrics"]
    assert metric["name"] == "Node Control/Rebirth" and metric["value"] is True
    # What came after the gap is taken once the reorder timeout passed.
    await wait_until(lambda: fetch(db_url, STORED, DEVICE),
                     lambda r: any(x["value"] == 43.0 for x in r))
    await edge.publish("spBv1.0/North/DDATA/PadA/W1", ddata(4, by_alias(99, 1.0)))
    again = await edge.next_message()
    assert again.topic == "spBv1.0/North/NCMD/PadA"
    rejects = await wait_until(
        lambda: fetch(db_url, "SELECT reason, detail FROM rejected_messages"),
        lambda r: len(r) == 1)
    assert rejects[0]["reason"] == "sparkplug_unknown_metric", rejects[0]["detail"]
    assert "alias 99" in rejects[0]["detail"]


async def test_a_stale_death_is_ignored_and_the_current_one_marks_devices_offline(
        edge: EdgeNode, db_url: str) -> None:
    await born(edge, db_url)
    statuses = "SELECT device_id, status FROM devices ORDER BY device_id"
    online = await fetch(db_url, statuses)
    assert [r["status"] for r in online] == ["online", "online"]
    await edge.publish("spBv1.0/North/NDEATH/PadA", bd_seq(7), qos=1)  # an older session's
    await edge.publish("spBv1.0/North/DDATA/PadA/W1", ddata(2, by_alias(10, 44.0)))
    await wait_until(lambda: fetch(db_url, STORED, DEVICE),
                     lambda r: any(x["value"] == 44.0 for x in r))
    assert [r["status"] for r in await fetch(db_url, statuses)] == ["online", "online"]
    await edge.kill()  # its Will: NDEATH with the current bdSeq
    await wait_until(lambda: fetch(db_url, statuses),
                     lambda r: [x["status"] for x in r] == ["offline", "offline"],
                     what="the current NDEATH to mark the node and its device offline")


async def test_a_command_from_the_api_reaches_the_device_as_dcmd(
        api: Api, edge: EdgeNode, db_url: str) -> None:
    await born(edge, db_url)
    sent = await api.admin.post(f"/devices/{DEVICE}/commands",
                                json={"name": "set_speed", "params": {"Speed/Setpoint": 52.5}})
    assert sent.status_code == 202, sent.text
    dcmd = await edge.next_message()
    assert dcmd.topic == "spBv1.0/North/DCMD/PadA/W1" and dcmd.payload is not None
    [metric] = dcmd.payload["metrics"]
    assert metric["name"] == "Speed/Setpoint" and metric["value"] == 52.5
    command = await wait_until(lambda: api.admin.get(f"/commands/{sent.json()['id']}"),
                               lambda r: r.json()["status"] != "pending")
    assert command.json()["status"] == "accepted"
    refused = await api.admin.post(f"/devices/{DEVICE}/commands",
                                   json={"name": "x", "params": {"No/Such": 1}})
    failed = await wait_until(lambda: api.admin.get(f"/commands/{refused.json()['id']}"),
                              lambda r: r.json()["status"] != "pending")
    assert failed.json()["status"] == "failed"
    assert "not in" in failed.json()["result"]["error"]
    # Desired config: its keys written as metrics, and again after the device's rebirth.
    config = await api.admin.post(f"/devices/{DEVICE}/config", json={"Speed/Setpoint": 55.0})
    assert config.status_code == 202, config.text
    written = await edge.next_message(topic="spBv1.0/North/DCMD/PadA/W1")
    assert written.payload is not None
    assert [(m["name"], m["value"]) for m in written.payload["metrics"]] == \
        [("Speed/Setpoint", 55.0)]
    await edge.publish("spBv1.0/North/DBIRTH/PadA/W1", dbirth(2))
    again = await edge.next_message(topic="spBv1.0/North/DCMD/PadA/W1")
    assert again.payload is not None and again.payload["metrics"][0]["value"] == 55.0
