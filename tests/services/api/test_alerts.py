"""Alerts through the API: the list and its filters, one alert with its events, the
people's acknowledge and resolve (actor, audit, the states that refuse them), device
scoping, and an alert raised by the real engine taken through its life by the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis

from devtools.stack.servers import RunningRedis
from devtools.stack.service_process import ServiceProcess
from shared import db
from shared.mqtt import telemetry_topic
from shared.streams import ALERTS
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients, MqttClient
from tests.utils.waiting import wait_until

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RULE = {"type": "threshold", "metric": "motor_temp", "op": ">", "value": 100}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def seed(db_url: str) -> dict[str, int]:
    """Two wells, two rules and four alerts, one in each state (by active_since: a1 at
    0 min firing, a2 at 5 resolved, a3 at 10 acknowledged, a4 at 20 pending)."""
    conn = await db.connect(db_url)
    try:
        await conn.execute("INSERT INTO devices (device_id) VALUES ('W-1'), ('W-2')")
        rules = {name: await conn.fetchval(
            "INSERT INTO rules (name, definition) VALUES ($1, $2) RETURNING id", name,
            {**RULE, "metric": metric}) for name, metric in (("hot", "motor_temp"),
                                                              ("pip", "pip"))}
        ids = {}
        for name, rule, device_id, state, severity, minute in (
                ("a1", "hot", "W-1", "firing", "critical", 0),
                ("a2", "pip", "W-1", "resolved", "warning", 5),
                ("a3", "hot", "W-2", "acknowledged", "critical", 10),
                ("a4", "pip", "W-2", "pending", "warning", 20)):
            fired = at(minute + 2) if state != "pending" else None
            ids[name] = await conn.fetchval(
                """
                INSERT INTO alerts (rule_id, device_id, state, severity, value, threshold,
                                    message, active_since, fire_at, fired_at, resolved_at,
                                    resolved_by)
                VALUES ($1, $2, $3, $4, 105, '> 100', 'hot', $5, $6, $7, $8, $9) RETURNING id
                """, rules[rule], device_id, state, severity, at(minute), at(minute + 2),
                fired, at(minute + 4) if state == "resolved" else None,
                "engine" if state == "resolved" else None)
        for kind, minute, value in (("pending", 0, 101.0), ("firing", 2, 105.0)):
            await conn.execute(
                "INSERT INTO alert_events (alert_id, kind, state, severity, at, actor, value, "
                "published_at) VALUES ($1, $2, $2, 'critical', $3, 'engine', $4, now())",
                ids["a1"], kind, at(minute), value)
        return {**ids, **{f"rule_{k}": v for k, v in rules.items()}}
    finally:
        await conn.close()


async def ids_of(client: httpx.AsyncClient, **params: Any) -> list[int]:
    response = await client.get("/alerts", params=params)
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["items"]]


async def test_list_newest_first_with_filters_and_pages(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    a1, a2, a3, a4 = ids["a1"], ids["a2"], ids["a3"], ids["a4"]
    viewer = await api.user("viewer")
    assert await ids_of(viewer) == [a4, a3, a2, a1]
    assert await ids_of(viewer, state=["firing", "acknowledged"]) == [a3, a1]
    assert await ids_of(viewer, severity="warning") == [a4, a2]
    assert await ids_of(viewer, device_id="W-1") == [a2, a1]
    assert await ids_of(viewer, rule_id=ids["rule_hot"]) == [a3, a1]
    assert await ids_of(viewer, start=iso(at(5)), end=iso(at(20))) == [a3, a2]
    assert await ids_of(viewer, device_id="W-1", state="resolved") == [a2]
    paged, cursor = [], None
    while True:
        page = (await viewer.get("/alerts", params={"limit": 3, **(
            {"cursor": cursor} if cursor else {})})).json()
        paged += [a["id"] for a in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert paged == [a4, a3, a2, a1]
    first = (await viewer.get("/alerts", params={"limit": 1})).json()["items"][0]
    assert (first["rule"], first["device_id"], first["state"], first["active_since"],
            first["fired_at"], first["threshold"]) == ("pip", "W-2", "pending", iso(at(20)),
                                                        None, "> 100")
    for params, field in (({"state": "open"}, "state"), ({"cursor": "x"}, "cursor"),
                          ({"start": iso(at(9)), "end": iso(at(1))}, "end")):
        refused = await viewer.get("/alerts", params=params)
        assert refused.status_code == 422 and field in refused.json()["error"]["message"]


async def test_one_alert_with_its_events_in_order(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    viewer = await api.user("viewer")
    alert = (await viewer.get(f"/alerts/{ids['a1']}")).json()
    assert (alert["rule"], alert["state"], alert["value"]) == ("hot", "firing", 105.0)
    assert [(e["kind"], e["actor"], e["at"], e["value"]) for e in alert["events"]] == [
        ("pending", "engine", iso(at(0)), 101.0), ("firing", "engine", iso(at(2)), 105.0)]
    missing = await viewer.get("/alerts/99999")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "alert 99999 does not exist"


async def test_acknowledge_and_resolve_record_the_person(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    ana = await api.user("operator", "ana")
    acked = await ana.post(f"/alerts/{ids['a1']}/acknowledge", json={"note": "crew sent"})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == \
        ("acknowledged", "user:ana")
    again = await ana.post(f"/alerts/{ids['a1']}/acknowledge")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == \
        f"alert {ids['a1']} is acknowledged; cannot make it acknowledged"
    resolved = await ana.post(f"/alerts/{ids['a1']}/resolve", json={"note": "valve open"})
    assert (resolved.json()["state"], resolved.json()["resolved_by"]) == \
        ("resolved", "user:ana")
    for alert, action in (("a1", "resolve"), ("a1", "acknowledge"), ("a2", "acknowledge"),
                          ("a4", "acknowledge")):  # a pending alert was never announced
        refused = await ana.post(f"/alerts/{ids[alert]}/{action}")
        assert refused.status_code == 409, (alert, action)
    assert (await ana.post(f"/alerts/{ids['a4']}/resolve")).status_code == 200
    assert (await ana.post("/alerts/99999/resolve")).status_code == 404
    viewer = await api.user("viewer")
    assert (await viewer.post(f"/alerts/{ids['a3']}/resolve")).status_code == 403

    events = (await ana.get(f"/alerts/{ids['a1']}")).json()["events"]
    assert [(e["kind"], e["state"], e["actor"], e["note"]) for e in events] == [
        ("pending", "pending", "engine", None), ("firing", "firing", "engine", None),
        ("acknowledged", "acknowledged", "user:ana", "crew sent"),
        ("resolved", "resolved", "user:ana", "valve open")]
    audit = await fetch(db_url, "SELECT actor, action, subject, detail FROM audit_log "
                                "WHERE action LIKE 'alert.%' ORDER BY id")
    assert [(r["actor"], r["action"], r["subject"], orjson.loads(r["detail"]))
            for r in audit] == [
        ("user:ana", "alert.acknowledge", str(ids["a1"]),
         {"device_id": "W-1", "rule_id": ids["rule_hot"], "note": "crew sent"}),
        ("user:ana", "alert.resolve", str(ids["a1"]),
         {"device_id": "W-1", "rule_id": ids["rule_hot"], "note": "valve open"}),
        ("user:ana", "alert.resolve", str(ids["a4"]),
         {"device_id": "W-2", "rule_id": ids["rule_pip"]})]


async def test_a_device_scoped_key_sees_and_acts_on_its_well_only(api: Api,
                                                                   db_url: str) -> None:
    ids = await seed(db_url)
    viewer = api.client(key=await api.key("viewer", device_id="W-1"))
    assert await ids_of(viewer) == [ids["a2"], ids["a1"]]
    assert (await viewer.get("/alerts", params={"device_id": "W-2"})).status_code == 404
    assert (await viewer.get(f"/alerts/{ids['a3']}")).status_code == 404
    assert (await viewer.get(f"/alerts/{ids['a1']}")).status_code == 200
    operator = api.client(key=await api.key("operator", device_id="W-1"))
    assert (await operator.post(f"/alerts/{ids['a3']}/resolve")).status_code == 404
    acked = await operator.post(f"/alerts/{ids['a1']}/acknowledge")
    assert acked.json()["acknowledged_by"] == "key:operator-key"
    [stored] = await fetch(db_url, "SELECT state FROM alerts WHERE id = $1", ids["a3"])
    assert stored["state"] == "acknowledged", "another well's alert is untouched"


# --- through the real engine ---------------------------------------------------------------
FAST = {"INSA_ALERTS_TICK_SECONDS": "0.2"}


def send(device: MqttClient, device_id: str, **values: float) -> None:
    device.publish(telemetry_topic(device_id), orjson.dumps(
        {"ts": round(time.time() * 1000), "telemetry": values}))
    time.sleep(0.003)  # a distinct millisecond each


def published(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(ALERTS)  # type: ignore[assignment]
        return [orjson.loads(fields[b"alert"]) for _, fields in entries]
    finally:
        client.close()


@pytest.mark.timeout(120)
async def test_an_engine_alert_is_listed_acknowledged_and_resolved_through_the_api(
        api: Api, ingestor: ServiceProcess, alerts_factory: Callable[..., ServiceProcess],
        clients: Clients, redis_server: RunningRedis, db_url: str) -> None:
    alerts_factory(**FAST)
    erin = await api.user("engineer", "erin")
    ana = await api.user("operator", "ana")
    device = clients.device("well-a1")
    send(device, "well-a1", motor_temp=90.0)
    # Created through the API while the engine runs: picked up without a restart.
    created = await erin.post("/rules", json={**RULE, "name": "motor hot",
                                              "severity": "critical"})
    assert created.status_code == 201, created.text

    async def firing() -> list[Any]:
        send(device, "well-a1", motor_temp=105.0)  # until the engine has reloaded its rules
        response = await ana.get("/alerts", params={"state": "firing", "device_id": "well-a1"})
        items: list[Any] = response.json()["items"]
        return items

    [alert] = await wait_until(firing, lambda items: len(items) == 1, timeout=30,
                               what="the engine's alert listed")
    assert (alert["rule"], alert["rule_id"], alert["severity"], alert["value"]) == \
        ("motor hot", created.json()["id"], "critical", 105.0)
    acked = await ana.post(f"/alerts/{alert['id']}/acknowledge", json={"note": "crew sent"})
    assert acked.status_code == 200, acked.text
    await wait_until(lambda: _async(published, redis_server.url),
                     lambda events: [e["event"] for e in events] == ["firing", "acknowledged"],
                     what="the acknowledgement published by the engine")
    send(device, "well-a1", motor_temp=106.0)  # still hot: stays acknowledged
    resolved = await ana.post(f"/alerts/{alert['id']}/resolve", json={"note": "cooled"})
    assert resolved.json()["resolved_by"] == "user:ana"
    events = await wait_until(lambda: _async(published, redis_server.url),
                              lambda events: len(events) >= 3, what="the resolve published")
    assert [(e["event"], e["actor"], e["alert_id"]) for e in events[:3]] == [
        ("firing", "engine", alert["id"]), ("acknowledged", "user:ana", alert["id"]),
        ("resolved", "user:ana", alert["id"])]
    assert (events[1]["note"], events[1]["acknowledged_by"]) == ("crew sent", "user:ana")
    detail = (await ana.get(f"/alerts/{alert['id']}")).json()
    assert [(e["kind"], e["actor"]) for e in detail["events"]] == [
        ("firing", "engine"), ("acknowledged", "user:ana"), ("resolved", "user:ana")]
    assert all(e["published_at"] is not None for e in detail["events"])
    # The condition still holds: the next hot reading starts a new alert.
    await wait_until(firing, lambda items: len(items) == 1 and items[0]["id"] != alert["id"],
                     what="a new alert after the manual resolve")


async def _async(probe: Callable[[str], Any], *args: Any) -> Any:
    return probe(*args)
