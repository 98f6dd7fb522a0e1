"""Gateways end to end: a gateway registered and provisioned through the API publishes for
its children over one connection into the real ingestor; what is not its own to send is
rejected per child with the rest stored; commands and config reach children through it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from devtools.stack.service_process import ServiceProcess
from shared.mqtt import child_topic, gateway_topic
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients, MqttClient, Will
from tests.utils.waiting import wait_until

ROWS = "SELECT count(*) AS n FROM telemetry"
CHILDREN = 300


async def gateway(api: Api, clients: Clients, gateway_id: str, *,
                  will: Will | None = None, **body: Any) -> MqttClient:
    """A gateway registered through the API, connected with the credentials it gave."""
    created = await api.admin.post("/gateways", json={"gateway_id": gateway_id,
                                                       "provision": True, **body})
    assert created.status_code == 201, created.text
    credentials = created.json()["credentials"]
    assert credentials["username"] == gateway_id
    client = clients.new(gateway_id, credentials["password"], will=will)
    assert not client.connect().is_failure
    return client


def batch(devices: list[str], ts: int, **values: float) -> bytes:
    return orjson.dumps({d: [{"ts": ts, **values}, {"ts": ts + 60, **values}]
                         for d in devices})


async def rejects(db_url: str) -> list[tuple[str, str]]:
    return [(r["device_id"], r["reason"]) for r in await fetch(
        db_url, "SELECT device_id, reason FROM rejected_messages ORDER BY device_id")]


async def test_one_connection_publishes_for_300_children_stored_exactly_once(
        api: Api, clients: Clients, ingestor: ServiceProcess, db_url: str) -> None:
    rtu = await gateway(api, clients, "rtu-1", auto_register=True)
    children = [f"W-{i:03d}" for i in range(CHILDREN)]
    payload = batch(children, 1_796_600_000, pip=850, motor_current=41.5)
    for _ in range(2):  # the same message again (a redelivery) is stored once
        code = rtu.publish(gateway_topic("rtu-1", "telemetry"), payload)
        assert code is not None and not code.is_failure
    code = rtu.publish(child_topic("rtu-1", "W-000", "telemetry", "pip"),
                       b'{"value": 900, "ts": 1796600600}')
    assert code is not None and not code.is_failure
    expected = CHILDREN * 2 * 2 + 1
    await wait_until(lambda: fetch(db_url, ROWS), lambda r: r[0]["n"] == expected,
                     what=f"{expected} rows")
    await asyncio.sleep(1)  # and no more
    assert (await fetch(db_url, ROWS))[0]["n"] == expected
    assigned = await fetch(db_url, "SELECT count(*) AS n FROM devices "
                                   "WHERE gateway_id = 'rtu-1'")
    assert assigned[0]["n"] == CHILDREN
    listed = (await api.admin.get("/gateways/rtu-1")).json()
    assert listed["devices"] == CHILDREN and listed["auto_register"] is True
    # Only its own tree: another gateway's topic and a device's own are refused.
    for topic in (gateway_topic("rtu-2", "telemetry"), "insa/devices/W-000/telemetry"):
        refused = rtu.publish(topic, b'{"pip": 1}')
        assert refused is not None and refused.is_failure, topic
    assert await rejects(db_url) == []


async def test_a_child_not_its_own_is_rejected_and_the_others_stored(
        api: Api, clients: Clients, ingestor: ServiceProcess, db_url: str) -> None:
    for device in ("W-mine", "W-other"):
        assert (await api.admin.post("/devices", json={"device_id": device})).status_code == 201
    assigned = await api.admin.post("/gateways/rtu-3/devices", json={"device_ids": ["W-mine"]})
    assert assigned.status_code == 404  # no such gateway yet
    rtu = await gateway(api, clients, "rtu-3")
    assigned = await api.admin.post("/gateways/rtu-3/devices", json={"device_ids": ["W-mine"]})
    assert assigned.status_code == 200, assigned.text
    rtu.publish(gateway_topic("rtu-3", "telemetry"),
                batch(["W-mine", "W-other", "W-new"], 1_796_600_000, pip=850))
    rtu.publish(gateway_topic("rtu-3", "telemetry"),
                orjson.dumps({"W-mine": {"ts": 1_796_600_300, "pip": "high"}}))
    rtu.publish(gateway_topic("rtu-3", "telemetry"), b"[1, 2]")
    await wait_until(lambda: rejects(db_url), lambda r: len(r) == 4, what="four rejects")
    assert await rejects(db_url) == [
        ("W-mine", "text_for_number"), ("W-new", "not_gateway_device"),
        ("W-other", "not_gateway_device"), ("rtu-3", "schema_violation")]
    stored = await fetch(db_url, "SELECT d.device_id, count(*) AS n FROM telemetry t "
                                 "JOIN devices d ON d.id = t.device GROUP BY 1")
    assert [(r["device_id"], r["n"]) for r in stored] == [("W-mine", 2)]
    detail = await fetch(db_url, "SELECT detail FROM rejected_messages "
                                 "WHERE device_id = 'W-other'")
    assert "not assigned to gateway rtu-3" in detail[0]["detail"]
    # Unassigned: refused from then on.
    assert (await api.admin.delete("/gateways/rtu-3/devices/W-mine")).status_code == 204
    rtu.publish(child_topic("rtu-3", "W-mine", "telemetry"), b'{"ts": 1796600900, "pip": 1}')
    await wait_until(lambda: rejects(db_url), lambda r: len(r) == 5)


async def test_the_gateways_last_will_marks_its_children_offline(
        api: Api, clients: Clients, ingestor: ServiceProcess, db_url: str) -> None:
    will = Will(gateway_topic("rtu-4", "status"), b"offline")
    rtu = await gateway(api, clients, "rtu-4", will=will, auto_register=True)
    rtu.publish(gateway_topic("rtu-4", "status"), b"online", retain=True)
    for child in ("W-a", "W-b"):
        rtu.publish(child_topic("rtu-4", child, "status"), b"online")
        rtu.publish(child_topic("rtu-4", child, "telemetry"), b'{"pip": 800}')
    statuses = "SELECT device_id, status FROM devices ORDER BY device_id"
    await wait_until(lambda: fetch(db_url, statuses),
                     lambda r: [s["status"] for s in r] == ["online", "online"])
    rtu.kill()  # no DISCONNECT: the broker publishes its Will
    await wait_until(lambda: fetch(db_url, statuses),
                     lambda r: [s["status"] for s in r] == ["offline", "offline"],
                     what="the gateway's Will to mark its children offline")
    shown = (await api.admin.get("/gateways/rtu-4")).json()
    assert shown["status"] == "offline"


async def test_commands_and_config_reach_children_through_the_gateway(
        api: Api, clients: Clients, db_url: str) -> None:
    assert (await api.admin.post("/devices", json={"device_id": "W-cmd"})).status_code == 201
    config = await api.admin.post("/devices/W-cmd/config", json={"sample_seconds": 5})
    assert config.status_code == 202
    rtu = await gateway(api, clients, "rtu-5")
    assert not rtu.subscribe(child_topic("rtu-5", "+", "command")).is_failure
    assert not rtu.subscribe(child_topic("rtu-5", "+", "config")).is_failure
    assert (await api.admin.post("/gateways/rtu-5/devices",
                                 json={"device_ids": ["W-cmd"]})).status_code == 200
    [moved] = await asyncio.to_thread(rtu.wait_for_messages, 1)
    assert moved.topic == child_topic("rtu-5", "W-cmd", "config")
    assert orjson.loads(moved.payload)["config"] == {"sample_seconds": 5}
    sent = await api.admin.post("/devices/W-cmd/commands", json={"name": "restart_vsd"})
    assert sent.status_code == 202, sent.text
    [_, command] = await asyncio.to_thread(rtu.wait_for_messages, 2)
    assert command.topic == child_topic("rtu-5", "W-cmd", "command")
    command_id = orjson.loads(command.payload)["id"]
    # Another gateway answering for a device not its own changes nothing.
    other = await gateway(api, clients, "rtu-6")
    other.publish(child_topic("rtu-6", "W-cmd", "command", "ack"),
                  orjson.dumps({"id": command_id, "status": "failed"}))
    rtu.publish(child_topic("rtu-5", "W-cmd", "command", "ack"),
                orjson.dumps({"id": command_id, "status": "done"}))
    done = await wait_until(lambda: api.admin.get(f"/commands/{command_id}"),
                            lambda r: r.json()["status"] != "pending")
    assert done.json()["status"] == "done"
    assert (await api.admin.get("/devices/W-cmd")).json()["gateway_id"] == "rtu-5"
    # Unassigned, its config moves back to its own topic (and off the gateway's).
    assert (await api.admin.delete("/gateways/rtu-5/devices/W-cmd")).status_code == 204
    cleared = await asyncio.to_thread(rtu.wait_for_messages, 3)
    assert cleared[-1].topic == child_topic("rtu-5", "W-cmd", "config")
    assert cleared[-1].payload == b""
