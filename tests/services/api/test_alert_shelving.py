"""Shelving alerts through the API: who may, the bounds of a shelf (422 naming the field),
the notes and actors in the history and the audit trail, the list's filter; and, with
the real ingestor and alert engine, a shelved alert that readings keep firing is not
re-notified (on MQTT or to its webhook) until its shelf ends, when it is announced again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from devtools.stack.service_process import ServiceProcess
from shared import db
from shared.alerting.evaluation import SHELF_ENDED
from shared.alerting.rules import parse_rule, stored_form
from shared.mqtt import telemetry_topic
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients, MqttClient
from tests.utils.receivers import Receiver
from tests.utils.waiting import wait_until

RULE = {"type": "threshold", "metric": "motor_temp", "op": ">", "value": 100}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def seed(db_url: str) -> dict[str, int]:
    """A well W-1 with a firing and a resolved alert, W-2 with a pending one."""
    conn = await db.connect(db_url)
    try:
        await conn.execute("INSERT INTO devices (device_id) VALUES ('W-1'), ('W-2')")
        rule_id = await conn.fetchval("INSERT INTO rules (name, definition) VALUES ('hot', $1) "
                                      "RETURNING id", RULE)
        ids = {"rule": rule_id}
        for name, device_id, state in (("firing", "W-1", "firing"), ("over", "W-1", "resolved"),
                                       ("pending", "W-2", "pending")):
            ids[name] = await conn.fetchval(
                """
                INSERT INTO alerts (rule_id, device_id, state, severity, value, message,
                                    active_since, fire_at, fired_at)
                VALUES ($1, $2, $3, 'critical', 105, 'hot', now(), now(),
                        CASE WHEN $3 <> 'pending' THEN now() END) RETURNING id
                """, rule_id, device_id, state)
        return ids
    finally:
        await conn.close()


def field_of(response: httpx.Response) -> str:
    """The field a 422 names: `details.field`, or the first of a list of them."""
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    return str(details["field"] if isinstance(details, dict) else details[0]["field"])


async def test_shelve_and_unshelve_record_who_why_and_until(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    alert_id = ids["firing"]
    ana, bob = await api.user("operator", "ana"), await api.user("engineer", "bob")
    before = datetime.now(UTC)
    shelved = await ana.post(f"/alerts/{alert_id}/shelve",
                             json={"minutes": 120, "note": "pump swap"})
    assert shelved.status_code == 200, shelved.text
    first_until = parse(shelved.json()["shelved_until"])
    assert before + timedelta(minutes=120) <= first_until <= \
        datetime.now(UTC) + timedelta(minutes=120)
    assert (shelved.json()["state"], shelved.json()["shelved_by"]) == ("firing", "user:ana")
    viewer = await api.user("viewer")
    listed = (await viewer.get("/alerts", params={"shelved": "true"})).json()["items"]
    assert [a["id"] for a in listed] == [alert_id]
    others = (await viewer.get("/alerts", params={"shelved": "false"})).json()["items"]
    assert alert_id not in {a["id"] for a in others} and len(others) == 2

    # A second shelf replaces the first; an unshelve ends it now.
    second_until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    again = await bob.post(f"/alerts/{alert_id}/shelve",
                           json={"until": iso(second_until), "note": "parts late"})
    assert (again.json()["shelved_until"], again.json()["shelved_by"]) == \
        (iso(second_until), "user:bob")
    ended = await ana.post(f"/alerts/{alert_id}/unshelve", json={"note": "pump back"})
    assert ended.status_code == 200, ended.text
    assert (ended.json()["shelved_until"], ended.json()["shelved_by"]) == (None, None)
    not_shelved = await ana.post(f"/alerts/{alert_id}/unshelve")
    assert not_shelved.status_code == 409
    assert not_shelved.json()["error"]["message"] == f"alert {alert_id} is not shelved"

    # Acknowledged while shelved, it stays shelved; the resolve ends the shelf.
    assert (await ana.post(f"/alerts/{alert_id}/shelve", json={"minutes": 30})).status_code \
        == 200
    acked = await ana.post(f"/alerts/{alert_id}/acknowledge", json={"note": "on it"})
    assert (acked.json()["state"], acked.json()["shelved_by"]) == ("acknowledged", "user:ana")
    resolved = await bob.post(f"/alerts/{alert_id}/resolve", json={"note": "replaced"})
    assert (resolved.json()["state"], resolved.json()["shelved_until"]) == ("resolved", None)

    events = (await viewer.get(f"/alerts/{alert_id}")).json()["events"]
    assert [(e["kind"], e["state"], e["actor"], e["note"]) for e in events] == [
        ("shelved", "firing", "user:ana", "pump swap"),
        ("shelved", "firing", "user:bob", "parts late"),
        ("unshelved", "firing", "user:ana", "pump back"),
        ("shelved", "firing", "user:ana", None),
        ("acknowledged", "acknowledged", "user:ana", "on it"),
        ("resolved", "resolved", "user:bob", "replaced")]
    shelves = [e["shelved_until"] for e in events]
    assert shelves[:3] == [iso(first_until), iso(second_until), None]
    assert shelves[3] is not None and shelves[4:] == [None, None]
    audit = await fetch(db_url, "SELECT actor, action, subject, detail FROM audit_log "
                                "WHERE action LIKE 'alert.%' ORDER BY id")
    rows = [(r["actor"], r["action"], r["subject"], orjson.loads(r["detail"])) for r in audit]
    where = {"device_id": "W-1", "rule_id": ids["rule"]}
    assert rows[:3] == [
        ("user:ana", "alert.shelve", str(alert_id),
         {**where, "note": "pump swap", "until": iso(first_until)}),
        ("user:bob", "alert.shelve", str(alert_id),
         {**where, "note": "parts late", "until": iso(second_until)}),
        ("user:ana", "alert.unshelve", str(alert_id), {**where, "note": "pump back"})]
    assert [r[1] for r in rows[3:]] == ["alert.shelve", "alert.acknowledge", "alert.resolve"]


async def test_a_shelf_out_of_bounds_or_a_long_note_is_422_naming_the_field(
        api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    alert_id = ids["firing"]
    ana = await api.user("operator", "ana")
    now = datetime.now(UTC)
    for body, field in (
            ({}, "minutes"),
            ({"note": "no length"}, "minutes"),
            ({"minutes": 10, "until": iso(now + timedelta(hours=1))}, "minutes"),
            ({"minutes": 4.9}, "minutes"),  # the floor: 5 minutes by default
            ({"minutes": 7 * 24 * 60 + 1}, "minutes"),  # the ceiling: 7 days
            ({"minutes": 0}, "body.minutes"),
            ({"minutes": -30}, "body.minutes"),
            ({"minutes": "soon"}, "body.minutes"),
            ({"minutes": "Infinity"}, "body.minutes"),
            ({"until": iso(now - timedelta(hours=1))}, "until"),
            ({"until": iso(now + timedelta(minutes=2))}, "until"),
            ({"until": iso(now + timedelta(days=8))}, "until"),
            ({"until": "2026-12-01T10:00:00"}, "body.until"),  # no zone
            ({"minutes": 60, "note": "x" * 2001}, "body.note")):
        refused = await ana.post(f"/alerts/{alert_id}/shelve", json=body)
        assert field_of(refused) == field, (body, refused.text)
    message = (await ana.post(f"/alerts/{alert_id}/shelve", json={"minutes": 1})).json()
    assert message["error"]["message"] == "minutes: a shelf lasts 5 to 10080 minutes from now"
    for action in ("acknowledge", "resolve", "unshelve"):
        refused = await ana.post(f"/alerts/{alert_id}/{action}", json={"note": "x" * 2001})
        assert field_of(refused) == "body.note", action
    [row] = await fetch(db_url, "SELECT state, shelved_until FROM alerts WHERE id = $1",
                        alert_id)
    assert (row["state"], row["shelved_until"]) == ("firing", None)
    assert await fetch(db_url, "SELECT id FROM alert_events") == []
    longest = await ana.post(f"/alerts/{alert_id}/shelve", json={"minutes": 7 * 24 * 60,
                                                                   "note": "x" * 2000})
    assert longest.status_code == 200, longest.text


async def test_who_may_shelve_which_alert(api: Api, db_url: str) -> None:
    ids = await seed(db_url)
    viewer = await api.user("viewer")
    for action in ("shelve", "unshelve"):
        denied = await viewer.post(f"/alerts/{ids['firing']}/{action}", json={"minutes": 60})
        assert denied.status_code == 403, action
    ana = await api.user("operator", "ana")
    for action in ("shelve", "unshelve"):
        missing = await ana.post(f"/alerts/99999/{action}", json={"minutes": 60})
        assert missing.status_code == 404, action
        assert missing.json()["error"]["message"] == "alert 99999 does not exist"
    for name, state in (("pending", "pending"), ("over", "resolved")):
        refused = await ana.post(f"/alerts/{ids[name]}/shelve", json={"minutes": 60})
        assert refused.status_code == 409
        assert refused.json()["error"]["message"] == \
            f"alert {ids[name]} is {state}; only a firing or acknowledged alert can be shelved"
    # A key scoped to W-2 neither sees nor shelves W-1's alert.
    scoped = api.client(key=await api.key("operator", device_id="W-2"))
    assert (await scoped.post(f"/alerts/{ids['firing']}/shelve",
                              json={"minutes": 60})).status_code == 404
    refusals = await fetch(db_url, "SELECT count(*) AS n FROM audit_log "
                                   "WHERE action = 'permission.denied'")
    assert refusals[0]["n"] == 2
    assert await fetch(db_url, "SELECT id FROM alert_events") == []


# --- through the real ingestor and engine --------------------------------------------------
FAST = {"INSA_ALERTS_TICK_SECONDS": "0.2", "INSA_ALERTS_WEBHOOK_ALLOW": "127.0.0.1",
        "INSA_ALERTS_DELIVERY_BACKOFF_SECONDS": "0.1"}
SHELF_SECONDS = 6.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver in this test's event loop (tests/utils/receivers.py)."""
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield receiver
    receiver.closing.set()
    server.close()
    await server.wait_closed()


@contextlib.asynccontextmanager
async def hot_readings(device: MqttClient, device_id: str) -> AsyncIterator[None]:
    """A reading over the threshold every 0.3 s, so the alert keeps firing throughout."""
    async def keep_sending() -> None:
        while True:
            device.publish(telemetry_topic(device_id), orjson.dumps(
                {"ts": round(time.time() * 1000), "telemetry": {"motor_temp": 105.0}}))
            await asyncio.sleep(0.3)

    task = asyncio.create_task(keep_sending())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def history(client: httpx.AsyncClient, alert_id: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await client.get(f"/alerts/{alert_id}")).json()["events"]
    return events


def delivered(receiver: Receiver) -> list[dict[str, Any]]:
    """The events the webhook received, by event id (the worker sends concurrently)."""
    return sorted((orjson.loads(r.body) for r in receiver.to("/ok")), key=lambda e: e["id"])


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """Each event's kind: `kind` in the API's history, `event` in a published message."""
    return [e.get("event") or e["kind"] for e in events]


def kinds_between(events: list[dict[str, Any]], first: str, last: str) -> list[str]:
    """The kinds of what came strictly between the first `first` and the first `last`
    after it."""
    names = kinds(events)
    start = names.index(first)
    return names[start + 1:names.index(last, start)]


def renotified_after_the_shelf(events: list[dict[str, Any]]) -> bool:
    """The shelf's end and a re-notify after it, each event published."""
    names = kinds(events)
    return "unshelved" in names and "renotify" in names[names.index("unshelved"):] and \
        all(e["published_at"] is not None for e in events)


@pytest.mark.parametrize("api_overrides", [{"alert_shelf_min_seconds": 1}])
@pytest.mark.timeout(150)
async def test_a_shelved_alert_is_quiet_until_its_shelf_ends_then_announced_again(
        api: Api, ingestor: ServiceProcess, alerts_factory: Callable[..., ServiceProcess],
        clients: Clients, receiver: Receiver, db_url: str) -> None:
    rule = parse_rule({**RULE, "name": "motor hot", "renotify_seconds": 1,
                       "actions": [{"kind": "webhook", "url": f"{receiver.url}/ok"}]})
    conn = await db.connect(db_url)
    try:
        await conn.execute("INSERT INTO rules (name, definition) VALUES ($1, $2)",
                           rule.name, stored_form(rule))
    finally:
        await conn.close()
    alerts_factory(**FAST)
    subscriber = clients.connect("insa-subscriber")
    subscriber.subscribe("insa/alerts/#")
    ana, bob = await api.user("operator", "ana"), await api.user("operator", "bob")
    device = clients.device("well-s1")

    async with hot_readings(device, "well-s1"):
        [alert] = await wait_until(
            lambda: _items(ana, state="firing", device_id="well-s1"),
            lambda items: len(items) == 1, timeout=30, what="the alert firing")
        alert_id = alert["id"]
        shelved = await ana.post(f"/alerts/{alert_id}/shelve",
                                 json={"minutes": SHELF_SECONDS / 60, "note": "pump swap"})
        assert shelved.status_code == 200, shelved.text
        until = parse(shelved.json()["shelved_until"])
        # The shelf ends on the engine's timer, with readings still holding the condition;
        # then re-notify resumes, counted from the announcement.
        events = await wait_until(
            lambda: history(ana, alert_id), renotified_after_the_shelf,
            timeout=SHELF_SECONDS + 20, what="the shelf's end announced, then a re-notify")

    assert kinds_between(events, "shelved", "unshelved") == [], "nothing made while shelved"
    shelf = next(e for e in events if e["kind"] == "shelved")
    assert (shelf["actor"], shelf["note"], shelf["state"], parse(shelf["shelved_until"])) == \
        ("user:ana", "pump swap", "firing", until)
    ended = next(e for e in events if e["kind"] == "unshelved")
    assert (ended["actor"], ended["note"], ended["state"]) == ("engine", SHELF_ENDED, "firing")
    assert until <= parse(ended["at"]) <= until + timedelta(seconds=5)
    # The webhook: the shelf and its end delivered, no repeat in between, though the
    # alert kept firing; the announcement says the alert is firing and no longer shelved.
    sent = await wait_until(lambda: _async(delivered, receiver),
                            lambda sent: "unshelved" in [e["event"] for e in sent],
                            what="the shelf's end delivered to the webhook")
    assert kinds_between(sent, "shelved", "unshelved") == []
    assert not [e for e in sent if e["event"] == "renotify"
                and parse(shelf["at"]) < parse(e["at"]) < parse(ended["at"])]
    [announced] = [e for e in sent if e["event"] == "unshelved"]
    assert (announced["state"], announced["shelved_until"], announced["shelved_by"],
            announced["actor"], announced["alert_id"]) == \
        ("firing", None, None, "engine", alert_id)
    [put_aside] = [e for e in sent if e["event"] == "shelved"]
    assert (put_aside["shelved_by"], put_aside["note"], parse(put_aside["shelved_until"])) == \
        ("user:ana", "pump swap", until)
    # MQTT subscribers saw the same: the shelf, then its end, nothing between.
    on_mqtt = await wait_until(
        lambda: _async(lambda: [orjson.loads(m.payload) for m in subscriber.messages]),
        lambda messages: "unshelved" in kinds(messages), what="the shelf's end on MQTT")
    assert kinds_between(on_mqtt, "shelved", "unshelved") == []

    # A person ends a shelf early; a clear while shelved resolves the alert and its shelf.
    async with hot_readings(device, "well-s1"):
        assert (await bob.post(f"/alerts/{alert_id}/shelve",
                               json={"minutes": 60, "note": "crew called"})).status_code == 200
        unshelved = await ana.post(f"/alerts/{alert_id}/unshelve", json={"note": "crew here"})
        assert unshelved.json()["shelved_until"] is None
        assert (await bob.post(f"/alerts/{alert_id}/shelve",
                               json={"minutes": 60})).status_code == 200
    device.publish(telemetry_topic("well-s1"), orjson.dumps(
        {"ts": round(time.time() * 1000), "telemetry": {"motor_temp": 90.0}}))
    [over] = await wait_until(lambda: _items(ana, state="resolved", device_id="well-s1"),
                              lambda items: len(items) == 1, what="resolved by the engine")
    assert (over["resolved_by"], over["shelved_until"], over["shelved_by"]) == \
        ("engine", None, None)
    tail = [(e["kind"], e["actor"], e["note"]) for e in await history(ana, alert_id)
            if e["id"] > ended["id"] and e["kind"] != "renotify"]
    assert tail == [("shelved", "user:bob", "crew called"), ("unshelved", "user:ana", "crew here"),
                    ("shelved", "user:bob", None), ("resolved", "engine", None)]
    sent = await wait_until(lambda: _async(delivered, receiver),
                            lambda sent: sent[-1]["event"] == "resolved",
                            what="the resolve delivered to the webhook")
    assert [(e["event"], e["actor"]) for e in sent if e["id"] > ended["id"]
            and e["event"] != "renotify"] == [
        ("shelved", "user:bob"), ("unshelved", "user:ana"), ("shelved", "user:bob"),
        ("resolved", "engine")]


async def _items(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/alerts", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _async(probe: Callable[..., Any], *args: Any) -> Any:
    return probe(*args)
