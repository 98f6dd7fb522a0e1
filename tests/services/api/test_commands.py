"""Commands through the API against real PostgreSQL, Redis and Mosquitto, answered by
simulated devices (MQTT clients on their own accounts): answers move a command forward
only, an unanswered one times out, and no other device's or malformed answer changes it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
from prometheus_client import REGISTRY

from devtools.stack.servers import RunningBroker
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients, MqttClient
from tests.utils.waiting import wait_until


def acks(outcome: str) -> float:
    """Answers counted with this outcome so far (the API runs in this process)."""
    return REGISTRY.get_sample_value("insa_api_command_acks_total", {"outcome": outcome}) or 0


async def device(api: Api, clients: Clients, device_id: str) -> MqttClient:
    """A device known to the API, connected and subscribed to its commands."""
    created = await api.admin.post("/devices", json={"device_id": device_id})
    assert created.status_code == 201, created.text
    client = clients.device(device_id)
    assert not client.subscribe(f"insa/devices/{device_id}/command").is_failure
    return client


async def send(client: httpx.AsyncClient, device_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/devices/{device_id}/commands", json=body)
    assert response.status_code == 202, response.text
    sent: dict[str, Any] = response.json()
    return sent


def answer(client: MqttClient, payload: Any, device_id: str | None = None) -> None:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    code = client.publish(f"insa/devices/{device_id or client.client_id}/command/ack", raw)
    assert code is not None and not code.is_failure, code


async def status_becomes(client: httpx.AsyncClient, command_id: str, status: str
                         ) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        found: dict[str, Any] = (await client.get(f"/commands/{command_id}")).json()
        return found
    return await wait_until(get, lambda c: c.get("status") == status, timeout=10,
                            what=f"command {status}")


async def counted(outcome: str, before: float, more: int = 1) -> None:
    async def value() -> float:
        return acks(outcome)
    await wait_until(value, lambda n: n >= before + more, timeout=10,
                     what=f"{more} answer(s) counted {outcome}")


async def test_accepted_then_done_and_never_back(api: Api, clients: Clients,
                                                 db_url: str) -> None:
    pump = await device(api, clients, "W-1")
    operator = await api.user("operator", "olga")
    sent = await send(operator, "W-1", name="restart", params={"delay_seconds": 5})
    assert sent["status"] == "pending" and sent["created_by"] == "user:olga"
    [message] = await asyncio.to_thread(pump.wait_for_messages, 1)
    command = orjson.loads(message.payload)
    assert message.qos == 1 and not message.retain
    assert command["id"] == sent["id"] and command["name"] == "restart"
    assert command["params"] == {"delay_seconds": 5} and command["ts"]

    answer(pump, {"id": sent["id"], "status": "accepted"})
    await status_becomes(operator, sent["id"], "accepted")
    answer(pump, {"id": sent["id"], "status": "done", "result": {"uptime_s": 0}})
    done = await status_becomes(operator, sent["id"], "done")
    assert done["result"] == {"uptime_s": 0}

    # Late and repeated answers change nothing: done stays done, with its result.
    stale = acks("stale")
    answer(pump, {"id": sent["id"], "status": "failed", "result": "late"})
    answer(pump, {"id": sent["id"], "status": "accepted"})
    await counted("stale", stale, 2)
    viewer = await api.user("viewer")
    final = (await viewer.get(f"/commands/{sent['id']}")).json()
    assert final["status"] == "done" and final["result"] == {"uptime_s": 0}
    assert (await viewer.post("/devices/W-1/commands", json={"name": "x"})).status_code == 403

    # The device's list: newest first, two pages without overlap.
    later = [await send(operator, "W-1", name=f"step-{n}") for n in range(2)]
    first = (await viewer.get("/devices/W-1/commands", params={"limit": 2})).json()
    second = (await viewer.get("/devices/W-1/commands",
                               params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [c["id"] for c in first["items"]] == [later[1]["id"], later[0]["id"]]
    assert [c["id"] for c in second["items"]] == [sent["id"]]
    assert second["next_cursor"] is None
    only_done = (await viewer.get("/devices/W-1/commands", params={"status": "done"})).json()
    assert [c["id"] for c in only_done["items"]] == [sent["id"]]

    rows = await fetch(db_url, "SELECT actor, subject, detail->>'name' AS name, "
                               "detail->>'command_id' AS command_id FROM audit_log "
                               "WHERE action = 'command.send' ORDER BY id")
    assert [(r["actor"], r["subject"], r["name"]) for r in rows] == [
        ("user:olga", "W-1", "restart"), ("user:olga", "W-1", "step-0"),
        ("user:olga", "W-1", "step-1")]
    assert rows[0]["command_id"] == sent["id"]


async def test_an_unanswered_command_times_out(api: Api, clients: Clients) -> None:
    pump = await device(api, clients, "W-2")
    silent = await send(api.admin, "W-2", name="ping", timeout_seconds=1)
    accepted = await send(api.admin, "W-2", name="calibrate", timeout_seconds=1.5)
    answer(pump, {"id": accepted["id"], "status": "accepted"})
    await status_becomes(api.admin, accepted["id"], "accepted")
    await status_becomes(api.admin, silent["id"], "timed_out")
    await status_becomes(api.admin, accepted["id"], "timed_out")
    # An answer after the timeout does not revive it.
    stale = acks("stale")
    answer(pump, {"id": silent["id"], "status": "done", "result": "too late"})
    await counted("stale", stale)
    after = (await api.admin.get(f"/commands/{silent['id']}")).json()
    assert after["status"] == "timed_out" and after["result"] is None


async def test_forged_and_malformed_answers_change_nothing(api: Api, clients: Clients) -> None:
    victim = await device(api, clients, "W-3")
    other = await device(api, clients, "W-4")
    sent = await send(api.admin, "W-3", name="stop")
    before = {o: acks(o) for o in ("wrong_device", "malformed", "unknown_command", "error")}

    # Another device knows the id: on its own topic it is ignored, on W-3's it is refused.
    answer(other, {"id": sent["id"], "status": "done", "result": "forged"})
    refused = other.publish("insa/devices/W-3/command/ack",
                            orjson.dumps({"id": sent["id"], "status": "done"}))
    assert refused is not None and refused.is_failure
    for garbage in (b"not json", b"[1, 2]", {"id": "not-a-uuid", "status": "done"},
                    {"id": sent["id"], "status": "exploded"}):
        answer(victim, garbage)
    answer(victim, {"id": str(uuid.uuid4()), "status": "done"})
    answer(victim, {"id": sent["id"], "status": "accepted", "result": "nul \u0000 byte"})
    await counted("wrong_device", before["wrong_device"])
    await counted("malformed", before["malformed"], 4)
    await counted("unknown_command", before["unknown_command"])
    await counted("error", before["error"])
    assert (await api.admin.get(f"/commands/{sent['id']}")).json()["status"] == "pending"

    # The consumer is still there: the real answer is applied.
    answer(victim, {"id": sent["id"], "status": "done", "result": {"stopped": True}})
    done = await status_becomes(api.admin, sent["id"], "done")
    assert done["result"] == {"stopped": True}


async def test_scoped_keys_unknown_devices_and_bad_input(api: Api, clients: Clients) -> None:
    for device_id in ("W-5", "W-6"):
        assert (await api.admin.post("/devices", json={"device_id": device_id})
                ).status_code == 201
    theirs = await send(api.admin, "W-6", name="ping")
    viewer = api.client(key=await api.key("viewer", device_id="W-5"))
    assert (await viewer.get(f"/commands/{theirs['id']}")).status_code == 404
    assert (await viewer.get("/devices/W-6/commands")).status_code == 404
    assert (await viewer.get("/devices/W-5/commands")).json()["items"] == []
    operator = api.client(key=await api.key("operator", device_id="W-5"))
    assert (await operator.post("/devices/W-6/commands", json={"name": "x"})
            ).status_code == 404
    assert (await send(operator, "W-5", name="ping"))["created_by"] == "key:operator-key"
    assert (await api.admin.post("/devices/nope/commands", json={"name": "x"})
            ).status_code == 404
    assert (await api.admin.get(f"/commands/{uuid.uuid4()}")).status_code == 404
    for body in ({"name": "bad name"}, {"name": "x", "params": [1]},
                 {"name": "x", "timeout_seconds": 0},
                 {"name": "x", "params": {"blob": "x" * 20_000}}):
        assert (await api.admin.post("/devices/W-5/commands", json=body)).status_code == 422
    assert (await api.admin.get("/devices/W-5/commands", params={"cursor": "e30"})
            ).status_code == 422


async def test_a_command_the_broker_does_not_take_is_recorded_failed(
        api: Api, broker: RunningBroker, db_url: str) -> None:
    assert (await api.admin.post("/devices", json={"device_id": "W-7"})).status_code == 201
    broker.stop()
    refused = await api.admin.post("/devices/W-7/commands", json={"name": "ping"})
    assert refused.status_code == 503, refused.text
    [row] = await fetch(db_url, "SELECT status, result->>'error' AS error FROM commands")
    assert row["status"] == "failed" and row["error"].startswith("not sent"), row
    outcomes = await fetch(db_url, "SELECT outcome FROM audit_log "
                                   "WHERE action = 'command.send' ORDER BY id")
    assert [r["outcome"] for r in outcomes] == ["success", "failure"]
