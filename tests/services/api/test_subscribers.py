"""Subscriber accounts through the API against real PostgreSQL, Redis and Mosquitto: several
consumers of one system and other systems all receive every alert, each only within its
topics; bad filters, names and collisions are refused; rotation and revocation drop the
connection and stop the old password; only admins manage them, on the audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from devtools.stack.servers import RunningBroker
from shared.broker_control import get_client
from shared.errors import NotFound
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients, MqttClient, barrier
from tests.utils.waiting import wait_until

ALERT = "insa/alerts/critical/W-1"


async def create(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/subscribers", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def connected(clients: Clients, credentials: dict[str, str], *filters: str) -> MqttClient:
    """A consumer connected with its credentials (client id as given) and subscribed."""
    client = clients.new(credentials["username"], credentials["password"],
                         client_id=credentials["client_id"])
    code = client.connect()
    assert not code.is_failure, f"{credentials['username']}: {code}"
    for topic_filter in filters:
        assert not client.subscribe(topic_filter).is_failure, topic_filter
    return client


def connects(clients: Clients, username: str, password: str) -> bool:
    return not clients.new(username, password).connect().is_failure


async def dropped(client: MqttClient) -> bool:
    """The broker closed its connection. A consumer may publish nothing: a live one gets
    its refusal (0x87), a dropped one no answer at all."""
    try:
        client.publish("insa/alerts/probe", b"", timeout=1)
    except (ConnectionError, TimeoutError):
        return True
    return False


async def audit_actions(db_url: str, subject: str) -> list[str]:
    rows = await fetch(db_url, "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id",
                       subject)
    return [r["action"] for r in rows]


def broker_has(broker: RunningBroker, command: dict[str, Any]) -> bool:
    with broker.admin() as admin:
        try:
            admin.execute(command)
        except NotFound:
            return False
    return True


async def test_two_consumers_of_one_system_and_another_system_all_receive_every_alert(
        api: Api, clients: Clients, db_url: str) -> None:
    historian = await create(api.admin, "historian", topics=["insa/alerts/#"],
                             consumers=["a", "b"], description="Plant historian")
    a, b = historian["credentials"]
    assert (a["username"], b["username"]) == ("historian.a", "historian.b")
    assert a["client_id"] == a["username"] and len(a["password"]) >= 24
    assert [c["username"] for c in historian["consumers"]] == ["historian.a", "historian.b"]
    pager = await create(api.admin, "pager", topics=["insa/alerts/critical/#"])
    [one] = pager["credentials"]
    assert one["username"] == "pager.1", "one consumer, `1`, by default"

    consumers = [connected(clients, a, "insa/alerts/#"), connected(clients, b, "insa/alerts/#"),
                 connected(clients, one, "insa/alerts/critical/#")]
    impostor = clients.new(a["username"], a["password"], client_id=b["username"])
    assert impostor.connect().is_failure, "bound to its own client id"
    alerts = clients.connect("insa-alerts")
    for n in (1, 2):
        code = alerts.publish(ALERT, b'{"id": "e%d"}' % n)
        assert code is not None and not code.is_failure
        for consumer in consumers:
            received = await asyncio.to_thread(consumer.wait_for_messages, n)
            assert [m.payload for m in received] == [b'{"id": "e%d"}' % i
                                                     for i in range(1, n + 1)]
    assert all(c.is_connected for c in consumers), "no consumer knocked another off"

    listed = (await api.admin.get("/subscribers")).json()
    assert [s["name"] for s in listed] == ["historian", "pager"]
    shown = (await api.admin.get("/subscribers/historian")).json()
    assert shown["topics"] == ["insa/alerts/#"] and shown["created_by"] == "user:admin"
    assert shown["description"] == "Plant historian" and "credentials" not in shown
    stored = await fetch(db_url, "SELECT s::text AS row FROM subscribers s UNION ALL "
                                 "SELECT c::text FROM subscriber_consumers c")
    assert not any(p["password"] in r["row"] for p in (a, b, one) for r in stored)
    assert await audit_actions(db_url, "historian") == ["subscriber.create"]


async def test_a_system_reads_only_its_topics_and_a_change_applies_live(
        api: Api, clients: Clients, db_url: str) -> None:
    [pager] = (await create(api.admin, "pager", topics=["insa/alerts/critical/#"]))["credentials"]
    client = connected(clients, pager, "insa/alerts/critical/#")
    for refused in ("insa/alerts/#", "insa/diagnostics/#", "insa/notify/#", "$SYS/#",
                    "$share/g/insa/alerts/critical/#", "insa/devices/+/telemetry"):
        assert client.subscribe(refused).is_failure, refused
    alerts = clients.connect("insa-alerts")
    alerts.publish("insa/alerts/warning/W-1", b"warning")
    alerts.publish(ALERT, b"critical")
    assert [m.payload for m in barrier(alerts, ALERT, client)] == [b"critical"]

    patched = await api.admin.patch("/subscribers/pager", json={
        "topics": ["insa/alerts/warning/#"], "description": "night pager"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["topics"] == ["insa/alerts/warning/#"]
    assert patched.json()["description"] == "night pager"
    alerts.publish(ALERT, b"critical, no longer granted")
    assert not client.subscribe("insa/alerts/warning/#").is_failure
    assert barrier(alerts, "insa/alerts/warning/W-2", client) == []
    assert client.is_connected, "a change of topics keeps its consumers connected"
    assert (await api.admin.patch("/subscribers/pager", json={})).status_code == 422
    assert (await api.admin.patch("/subscribers/nope", json={"description": "x"})
            ).status_code == 404
    assert await audit_actions(db_url, "pager") == ["subscriber.create", "subscriber.update"]


BAD_FILTERS = ("#", "insa/#", "insa/+/#", "insa/devices/+/telemetry", "$SYS/broker/uptime",
               "$share/g/insa/alerts/#", "insa/alerts/crit+", "insa/alerts/#/x",
               "insa/alerts/x#", "insa/alerts/", "insa/alerts", "insa/alerts/\x00")


async def test_a_filter_outside_the_trees_is_refused_naming_it(api: Api) -> None:
    await create(api.admin, "pager", topics=["insa/alerts/#"])
    for bad in BAD_FILTERS:
        created = await api.admin.post("/subscribers", json={
            "name": "s", "topics": ["insa/alerts/#", bad]})
        patched = await api.admin.patch("/subscribers/pager", json={"topics": [bad]})
        for refused, field in ((created, "topics.1"), (patched, "topics.0")):
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["error"]["details"]["field"] == field, bad
    assert (await api.admin.get("/subscribers/pager")).json()["topics"] == ["insa/alerts/#"]
    assert (await api.admin.get("/subscribers/s")).status_code == 404


async def test_bad_names_collisions_and_roles_are_refused(
        api: Api, clients: Clients, broker: RunningBroker, db_url: str) -> None:
    topics = ["insa/alerts/#"]
    for name in ("insa-x", "INSA-x", "a.b", "a/b", "+", ""):
        refused = await api.admin.post("/subscribers", json={"name": name, "topics": topics})
        assert refused.status_code == 422 and "name" in refused.text, name
    for consumers in (["a", "a"], ["a.b"], [], ["x" * 33]):
        refused = await api.admin.post("/subscribers", json={
            "name": "s", "topics": topics, "consumers": consumers})
        assert refused.status_code == 422 and "consumers" in refused.text, consumers

    # A device's account named like a consumer is never taken over, and nothing is made.
    device = await api.admin.post("/devices", json={"device_id": "historian.a",
                                                    "provision": True})
    assert device.status_code == 201, device.text
    taken = await api.admin.post("/subscribers", json={
        "name": "historian", "topics": topics, "consumers": ["b", "a"]})
    assert taken.status_code == 409, taken.text
    assert "not subscriber historian's" in taken.json()["error"]["message"]
    assert (await api.admin.get("/subscribers/historian")).status_code == 404
    assert connects(clients, "historian.a", device.json()["credentials"]["password"])
    assert not broker_has(broker, get_client("historian.b"))
    assert not broker_has(broker, {"command": "getRole", "rolename": "subscriber:historian"})

    await create(api.admin, "pager", topics=topics)
    for name in ("pager", "PAGER"):
        again = await api.admin.post("/subscribers", json={"name": name, "topics": topics})
        assert again.status_code == 409, name
    for role in ("engineer", "operator", "viewer"):
        user = await api.user(role)
        assert (await user.get("/subscribers")).status_code == 403, role
        assert (await user.post("/subscribers", json={"name": "x", "topics": topics})
                ).status_code == 403, role
        assert (await user.post("/subscribers/pager/consumers/1/rotate")).status_code == 403
    scoped = api.client(key=await api.key("admin", device_id="historian.a"))
    assert (await scoped.get("/subscribers")).status_code == 403, "a key scoped to a device"
    denied = await fetch(db_url, "SELECT count(*) AS n FROM audit_log WHERE action = "
                                 "'permission.denied' AND detail->>'permission' = "
                                 "'subscribers:manage'")
    assert denied[0]["n"] == 10


async def test_rotate_add_and_revoke_consumers(api: Api, clients: Clients,
                                               broker: RunningBroker, db_url: str) -> None:
    created = await create(api.admin, "scada", topics=["insa/alerts/#", "insa/notify/#"],
                           consumers=["1", "2"])
    one, two = created["credentials"]
    first = connected(clients, one)
    rotated = await api.admin.post("/subscribers/scada/consumers/1/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["username"] == new["client_id"] == "scada.1"
    assert new["password"] != one["password"]
    await wait_until(lambda: dropped(first), bool, timeout=5, what="scada.1 dropped")
    assert not connects(clients, "scada.1", one["password"]), "the old password is refused"
    again = connected(clients, new)
    shown = (await api.admin.get("/subscribers/scada")).json()["consumers"]
    assert [c["rotated_at"] is not None for c in shown] == [True, False]

    added = await api.admin.post("/subscribers/scada/consumers", json={"name": "3"})
    assert added.status_code == 201, added.text
    assert added.json()["username"] == "scada.3"
    third = connected(clients, added.json(), "insa/notify/#")
    assert (await api.admin.post("/subscribers/scada/consumers", json={"name": "3"})
            ).status_code == 409
    assert (await api.admin.post("/subscribers/nope/consumers", json={"name": "3"})
            ).status_code == 404
    assert (await api.admin.post("/subscribers/scada/consumers/9/rotate")).status_code == 404

    second = connected(clients, two)
    assert (await api.admin.delete("/subscribers/scada/consumers/2")).status_code == 204
    await wait_until(lambda: dropped(second), bool, timeout=5, what="scada.2 dropped")
    assert not connects(clients, "scada.2", two["password"])
    assert (await api.admin.delete("/subscribers/scada/consumers/2")).status_code == 404
    assert [c["name"] for c in (await api.admin.get("/subscribers/scada")).json()[
        "consumers"]] == ["1", "3"]

    assert (await api.admin.delete("/subscribers/scada")).status_code == 204
    await wait_until(lambda: dropped(again), bool, timeout=5, what="scada.1 revoked")
    await wait_until(lambda: dropped(third), bool, timeout=5, what="scada.3 revoked")
    assert not connects(clients, "scada.1", new["password"])
    assert not connects(clients, "scada.3", added.json()["password"])
    assert (await api.admin.get("/subscribers/scada")).status_code == 404
    assert not broker_has(broker, {"command": "getRole", "rolename": "subscriber:scada"})
    assert await audit_actions(db_url, "scada") == [
        "subscriber.create", "subscriber.rotate", "subscriber.consumer.create",
        "subscriber.revoke", "subscriber.delete"]
