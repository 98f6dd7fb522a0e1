"""Devices through the API against real PostgreSQL, Redis and Mosquitto: the catalog and
its filters, MQTT credentials that really connect (and stop connecting), and the desired
configuration a device receives retained."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from devtools.stack.servers import RunningBroker
from tests.fixtures.api import Api
from tests.utils.db import execute, fetch
from tests.utils.mqtt_client import Clients, MqttClient
from tests.utils.waiting import wait_until


async def create(client: httpx.AsyncClient, device_id: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/devices", json={"device_id": device_id, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def audit_actions(db_url: str, subject: str) -> list[str]:
    rows = await fetch(db_url, "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id",
                       subject)
    return [r["action"] for r in rows]


def connects(clients: Clients, username: str, password: str) -> bool:
    client = clients.new(username, password)
    code = client.connect()
    return not code.is_failure


async def ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/devices", params=params)
    assert response.status_code == 200, response.text
    return [d["device_id"] for d in response.json()["items"]]


async def test_crud_filters_and_pagination(api: Api, db_url: str) -> None:
    engineer = await api.user("engineer")
    created = await create(engineer, "W-101", name="Well 101", tags=["north", "pad-3"],
                           metadata={"pump_model": "REDA D460N"})
    assert created["status"] == "unknown" and created["credentials"] is None
    assert created["tags"] == ["north", "pad-3"]
    assert created["metadata"] == {"pump_model": "REDA D460N"}
    await create(engineer, "W-102", name="Pad three west", tags=["north"])
    await create(engineer, "W-201", device_type="rtu", tags=["south"])
    await create(engineer, "X-1", name="Well test rig")
    await execute(db_url, "UPDATE devices SET status = 'online', last_seen = now() "
                          "WHERE device_id = 'W-102'")
    assert (await engineer.post("/devices", json={"device_id": "W-101"})).status_code == 409
    for bad in ("insa-api", "INSA-api", "Insa-Admin", "a/b", "+", ""):
        refused = await engineer.post("/devices", json={"device_id": bad})
        assert refused.status_code == 422, bad
    reserved = await engineer.post("/devices", json={"device_id": "W-9",
                                                     "metadata": {"tags": ["x"]}})
    assert reserved.status_code == 422
    assert reserved.json()["error"]["code"] == "reserved_metadata_key"

    viewer = await api.user("viewer")
    assert await ids(viewer) == ["W-101", "W-102", "W-201", "X-1"]
    assert await ids(viewer, device_type="rtu") == ["W-201"]
    assert await ids(viewer, tag="north") == ["W-101", "W-102"]
    assert await ids(viewer, status="online") == ["W-102"]
    assert await ids(viewer, q="W-1") == ["W-101", "W-102"]
    assert await ids(viewer, q="well") == ["W-101", "X-1"], "name prefix, any case"
    assert await ids(viewer, tag="north", status="unknown") == ["W-101"]
    one = (await viewer.get("/devices/W-102")).json()
    assert one["status"] == "online" and one["last_seen"] is not None
    assert one["name"] == "Pad three west" and one["desired_config"] is None

    # Two pages of two, then none: every device once, in order.
    first = (await viewer.get("/devices", params={"limit": 2})).json()
    second = (await viewer.get("/devices", params={"limit": 2,
                                                   "cursor": first["next_cursor"]})).json()
    assert [d["device_id"] for d in first["items"]] == ["W-101", "W-102"]
    assert [d["device_id"] for d in second["items"]] == ["W-201", "X-1"]
    assert second["next_cursor"] is None
    too_many = await viewer.get("/devices", params={"limit": api.settings.page_max + 1})
    assert too_many.status_code == 422
    assert (await viewer.get("/devices", params={"cursor": "garbage"})).status_code == 422

    patched = await engineer.patch("/devices/W-101", json={"name": None, "tags": ["south"],
                                                           "metadata": {"depth_m": 2100}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] is None and patched.json()["tags"] == ["south"]
    assert patched.json()["metadata"] == {"depth_m": 2100}
    renamed = (await engineer.patch("/devices/W-101", json={"device_type": "pcp"})).json()
    assert renamed["tags"] == ["south"] and renamed["metadata"] == {"depth_m": 2100}
    assert (await engineer.patch("/devices/W-101", json={})).status_code == 422
    assert (await engineer.patch("/devices/nope", json={"name": "x"})).status_code == 404
    assert (await viewer.patch("/devices/W-101", json={"name": "x"})).status_code == 403

    assert (await engineer.delete("/devices/W-101")).status_code == 204
    assert (await viewer.get("/devices/W-101")).status_code == 404
    assert (await engineer.delete("/devices/W-101")).status_code == 404
    assert await audit_actions(db_url, "W-101") == ["device.create", "device.update",
                                                    "device.update", "device.delete"]


async def test_a_device_scoped_key_sees_its_device_only(api: Api) -> None:
    await create(api.admin, "W-1")
    await create(api.admin, "W-2")
    scoped = api.client(key=await api.key("engineer", device_id="W-1"))
    assert await ids(scoped) == ["W-1"]
    assert (await scoped.get("/devices/W-2")).status_code == 404
    assert (await scoped.patch("/devices/W-2", json={"name": "x"})).status_code == 404
    assert (await scoped.post("/devices/W-2/credentials")).status_code == 404
    assert (await scoped.post("/devices", json={"device_id": "W-3"})).status_code == 403
    assert (await scoped.get("/devices/W-1")).status_code == 200


async def test_provisioned_credentials_connect_and_publish_own_telemetry(
        api: Api, clients: Clients, db_url: str) -> None:
    created = await create(api.admin, "W-7", provision=True)
    credentials = created["credentials"]
    assert credentials["username"] == "W-7" and len(credentials["password"]) >= 24
    stored = await fetch(db_url, "SELECT metadata::text AS m FROM devices")
    assert credentials["password"] not in str([r["m"] for r in stored])
    ingestor = clients.connect("insa-ingestor")
    assert not ingestor.subscribe("insa/devices/+/telemetry").is_failure
    device = clients.new("W-7", credentials["password"])
    assert not device.connect().is_failure
    code = device.publish("insa/devices/W-7/telemetry", b'{"telemetry": {"pip": 850}}')
    assert code is not None and not code.is_failure
    refused = device.publish("insa/devices/W-8/telemetry", b'{"telemetry": {"pip": 1}}')
    assert refused is not None and refused.is_failure, "only its own topics"
    [message] = await asyncio.to_thread(ingestor.wait_for_messages, 1)
    assert message.topic == "insa/devices/W-7/telemetry"
    assert await audit_actions(db_url, "W-7") == ["device.create",
                                                  "device.credentials.provision"]


async def test_rotate_and_revoke_credentials(api: Api, clients: Clients, db_url: str) -> None:
    await create(api.admin, "W-5")
    engineer = await api.user("engineer")
    issued = await engineer.post("/devices/W-5/credentials")
    assert issued.status_code == 200, issued.text
    first = issued.json()["password"]
    assert connects(clients, "W-5", first)
    rotated = (await engineer.post("/devices/W-5/credentials")).json()["password"]
    assert rotated != first
    assert not connects(clients, "W-5", first), "the old password no longer connects"
    assert connects(clients, "W-5", rotated)
    assert (await engineer.delete("/devices/W-5/credentials")).status_code == 204
    assert not connects(clients, "W-5", rotated), "revoked: no connection at all"
    assert (await engineer.delete("/devices/W-5/credentials")).status_code == 204
    again = (await engineer.post("/devices/W-5/credentials")).json()["password"]
    assert connects(clients, "W-5", again), "issued again after a revoke"
    viewer = await api.user("viewer")
    assert (await viewer.post("/devices/W-5/credentials")).status_code == 403
    assert (await engineer.post("/devices/nope/credentials")).status_code == 404
    assert await audit_actions(db_url, "W-5") == [
        "device.create", "device.credentials.provision", "device.credentials.rotate",
        "device.credentials.revoke", "device.credentials.revoke",
        "device.credentials.provision"]


async def test_delete_removes_the_broker_account(api: Api, clients: Clients,
                                                 db_url: str) -> None:
    password = (await create(api.admin, "W-6", provision=True))["credentials"]["password"]
    device = clients.new("W-6", password)
    assert not device.connect().is_failure
    assert (await api.admin.delete("/devices/W-6")).status_code == 204
    await wait_until(lambda: dropped(device), bool, timeout=5, what="W-6 disconnected")
    assert not connects(clients, "W-6", password)
    assert await audit_actions(db_url, "W-6") == ["device.create",
                                                  "device.credentials.provision",
                                                  "device.delete"]
    # A device without an account is deleted too (the broker's "not found" is fine).
    await create(api.admin, "W-60")
    assert (await api.admin.delete("/devices/W-60")).status_code == 204


async def dropped(client: MqttClient) -> bool:
    """The broker closed its connection (paho's is_connected() does not always notice)."""
    try:
        client.publish(f"insa/devices/{client.client_id}/status", b"online", timeout=1)
    except (ConnectionError, TimeoutError):
        return True
    return False


def subscribed(clients: Clients, device_id: str, password: str, *topics: str) -> MqttClient:
    device = clients.new(device_id, password)
    assert not device.connect().is_failure
    for topic in topics:
        assert not device.subscribe(topic).is_failure
    return device


async def test_desired_config_is_received_retained(api: Api, clients: Clients,
                                                   broker: RunningBroker) -> None:
    await create(api.admin, "W-3")
    engineer = await api.user("engineer")
    first = await engineer.post("/devices/W-3/config", json={"sample_seconds": 10})
    assert first.status_code == 202, first.text
    assert first.json()["version"] == 1
    second = await engineer.post("/devices/W-3/config", json={"sample_seconds": 5,
                                                              "vsd_max_hz": 60})
    assert second.json()["version"] == 2 and second.json()["updated_by"].startswith("user:")
    # The device subscribes afterwards and gets the latest one, retained.
    password = broker.add_device("W-3")
    device = subscribed(clients, "W-3", password, "insa/devices/W-3/config")
    [message] = await asyncio.to_thread(device.wait_for_messages, 1)
    assert message.retain
    body = orjson.loads(message.payload)
    assert body["version"] == 2 and body["config"] == {"sample_seconds": 5, "vsd_max_hz": 60}
    shown = (await engineer.get("/devices/W-3")).json()["desired_config"]
    assert shown["version"] == 2 and shown["config"] == body["config"]
    assert (await engineer.get("/devices/W-3")).json()["metadata"] == {}

    assert (await engineer.post("/devices/W-3/config", json=[1, 2])).status_code == 422
    huge = await engineer.post("/devices/W-3/config", json={"blob": "x" * 40_000})
    assert huge.status_code == 422 and huge.json()["error"]["code"] == "too_large"
    assert (await engineer.post("/devices/nope/config", json={})).status_code == 404
    operator = await api.user("operator")
    assert (await operator.post("/devices/W-3/config", json={})).status_code == 403


async def test_deleting_a_device_clears_its_retained_config(api: Api, clients: Clients,
                                                            broker: RunningBroker) -> None:
    await create(api.admin, "W-4")
    assert (await api.admin.post("/devices/W-4/config", json={"a": 1})).status_code == 202
    assert (await api.admin.delete("/devices/W-4")).status_code == 204
    password = (await create(api.admin, "W-4", provision=True))["credentials"]["password"]
    device = subscribed(clients, "W-4", password, "insa/devices/W-4/config",
                        "insa/devices/W-4/command")
    # A command sent after the subscription is the marker: a retained config would have
    # arrived before it.
    assert (await api.admin.post("/devices/W-4/commands", json={"name": "ping"})
            ).status_code == 202
    [message] = await asyncio.to_thread(device.wait_for_messages, 1)
    assert message.topic == "insa/devices/W-4/command"


async def test_a_device_never_takes_over_another_broker_account(
        api: Api, broker: RunningBroker, clients: Clients) -> None:
    """A bridge's account named like a device: provisioning and deleting the device leave
    it alone, and its password still works."""
    broker.add_service_account("scada-bridge", "insa-subscriber")
    assert (await api.admin.post("/devices", json={"device_id": "scada-bridge"})
            ).status_code == 201
    taken = await api.admin.post("/devices/scada-bridge/credentials")
    assert taken.status_code == 409 and "not this device's" in taken.json()["error"]["message"]
    assert (await api.admin.delete("/devices/scada-bridge")).status_code == 204
    assert clients.connect("scada-bridge").is_connected  # its own password still works


async def test_equipment_attributes_are_set_kept_and_checked(api: Api, db_url: str) -> None:
    created = await create(api.admin, "W-eq", attributes={
        "motor_rated_current": 46.0, "motor_max_temp": 150, "vsd_min_hz": 35,
        "vsd_max_hz": 62})
    assert created["attributes"]["motor_rated_current"] == 46.0
    assert created["attributes"]["pump_min_flow"] is None
    # Stored where the alert engine and diagnosis read it, only what is set.
    stored = await fetch(db_url, "SELECT metadata FROM devices WHERE device_id = 'W-eq'")
    assert orjson.loads(stored[0]["metadata"])["attributes"] == {
        "motor_rated_current": 46.0, "motor_max_temp": 150.0, "vsd_min_hz": 35.0,
        "vsd_max_hz": 62.0}
    # A patch of other fields keeps them; a patch of attributes replaces them whole.
    patched = await api.admin.patch("/devices/W-eq", json={"metadata": {"pad": "3"}})
    assert patched.json()["attributes"]["motor_rated_current"] == 46.0
    patched = await api.admin.patch("/devices/W-eq", json={"attributes": {
        "pump_min_flow": 800, "pump_max_flow": 2600}})
    assert patched.status_code == 200, patched.text
    assert {k: v for k, v in patched.json()["attributes"].items() if v is not None} == {
        "pump_min_flow": 800.0, "pump_max_flow": 2600.0}
    assert patched.json()["metadata"] == {"pad": "3"}
    # Wrong types, ranges and unknown names are 422 naming the field.
    for attributes, field in (({"motor_rated_current": "high"}, "motor_rated_current"),
                              ({"motor_rated_current": -3}, "motor_rated_current"),
                              ({"vsd_min_hz": 60, "vsd_max_hz": 40}, "vsd_min_hz"),
                              ({"motor_rated_amps": 40}, "motor_rated_amps")):
        refused = await api.admin.patch("/devices/W-eq", json={"attributes": attributes})
        assert refused.status_code == 422, refused.text
        assert field in refused.text
    refused = await api.admin.patch("/devices/W-eq",
                                    json={"metadata": {"attributes": {"x": 1}}})
    assert refused.status_code == 422 and "attributes" in refused.text
