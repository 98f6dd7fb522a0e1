"""The alert engine through the real pipeline: a device publishes over MQTT, the
ingestor stores and streams, the engine evaluates, commits, and publishes on
insa:alerts and insa/alerts/<severity>/<device_id>."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis

from devtools.registry import ALERTS as ALERTS_SERVICE
from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess, replica_account
from services.alerts.publishing import iso
from shared import db
from shared.alerting import store
from shared.alerting.backtest import backtest
from shared.alerting.defaults import load_defaults
from shared.alerting.rules import parse_rule, stored_form
from shared.mqtt import telemetry_topic
from shared.streams import ALERTS, encode_diagnosis
from shared.streams import DIAGNOSTICS as DIAGNOSTICS_STREAM
from tests.utils.db import execute, fetch
from tests.utils.mqtt_client import Clients, MqttClient
from tests.utils.streams import range_entries, xadd_fields
from tests.utils.waiting import wait_until

FAST = {"INSA_ALERTS_TICK_SECONDS": "0.2"}


async def add_rule(db_url: str, **definition: Any) -> int:
    rule = parse_rule(definition)
    conn = await db.connect(db_url)
    try:
        return int(await conn.fetchval(
            "INSERT INTO rules (name, definition) VALUES ($1, $2) RETURNING id",
            rule.name, stored_form(rule)))
    finally:
        await conn.close()


def send(device: MqttClient, device_id: str, **values: float) -> None:
    device.publish(telemetry_topic(device_id), orjson.dumps(
        {"ts": round(time.time() * 1000), "telemetry": values}))
    time.sleep(0.003)  # a distinct millisecond each: one time per (device, metric) is stored


async def events(db_url: str, device_id: str) -> list[tuple[str, str]]:
    rows = await fetch(db_url, "SELECT e.kind, e.state FROM alert_events e JOIN alerts a "
                               "ON a.id = e.alert_id WHERE a.device_id = $1 ORDER BY e.id",
                       device_id)
    return [(r["kind"], r["state"]) for r in rows]


async def alerts(db_url: str, device_id: str | None = None) -> list[Any]:
    return await fetch(db_url, "SELECT * FROM alerts WHERE $1::text IS NULL OR device_id = $1 "
                               "ORDER BY id", device_id)


async def manual(db_url: str, action: str, alert_id: int) -> None:
    conn = await db.connect(db_url)
    try:
        await getattr(store, action)(conn, alert_id, "operator-ana", "on it")
    finally:
        await conn.close()


async def test_a_subscriber_sees_firing_acknowledged_resolved_in_order(
        ingestor: ServiceProcess, alerts_factory: Callable[..., ServiceProcess],
        clients: Clients, redis_server: RunningRedis, db_url: str) -> None:
    alerts_factory(**FAST)
    # Added while the engine runs: picked up by NOTIFY, no restart.
    await add_rule(db_url, type="threshold", name="motor hot", metric="motor_temp", op=">",
                   value=100, severity="critical",
                   actions=[{"kind": "mqtt", "topic": "insa/notify/control-room"}])
    subscriber = clients.connect("insa-subscriber")
    subscriber.subscribe("insa/alerts/#")
    subscriber.subscribe("insa/notify/#")
    device = clients.device("well-a1")
    send(device, "well-a1", motor_temp=90.0)
    await wait_until(lambda: alerts(db_url, "well-a1"), lambda rows: rows == [], timeout=5,
                     what="a healthy reading raises nothing")

    async def rule_loaded() -> list[Any]:
        send(device, "well-a1", motor_temp=105.0)  # until the reload has happened
        return await alerts(db_url, "well-a1")

    await wait_until(rule_loaded, lambda rows: len(rows) == 1, what="the alert raised")
    firing = subscriber.wait_for_messages(2, 15)[0]  # on insa/alerts and insa/notify
    alert_id = orjson.loads(firing.payload)["alert_id"]
    await manual(db_url, "acknowledge", alert_id)
    subscriber.wait_for_messages(4, 15)
    send(device, "well-a1", motor_temp=95.0)
    received = subscriber.wait_for_messages(6, 15)
    messages = [orjson.loads(m.payload) for m in received if m.topic.startswith("insa/alerts/")]
    assert [(m["event"], m["state"]) for m in messages] == [
        ("firing", "firing"), ("acknowledged", "acknowledged"), ("resolved", "resolved")]
    assert {m.topic for m in received} == {"insa/alerts/critical/well-a1",
                                           "insa/notify/control-room"}
    assert {m["alert_id"] for m in messages} == {alert_id}
    # The rule's own MQTT action: the same events on its topic.
    assert [orjson.loads(m.payload)["event"] for m in received
            if m.topic == "insa/notify/control-room"] == ["firing", "acknowledged", "resolved"]
    assert messages[1]["acknowledged_by"] == "operator-ana"
    assert messages[2]["resolved_by"] == "engine" and messages[2]["value"] == 95.0
    assert messages[0]["rule"] == "motor hot" and messages[0]["threshold"] == "> 100"
    stream = range_entries(redis.Redis.from_url(redis_server.url).xrange(ALERTS))
    assert [orjson.loads(f[b"alert"])["event"] for _, f in stream] == \
        ["firing", "acknowledged", "resolved"]
    # The backtest over the same stored history finds the same alert, resolved at the same
    # reading; it fires at the first breach, which the live engine saw before its reload.
    [row] = await alerts(db_url, "well-a1")
    conn = await db.connect(db_url)
    try:
        [would] = await backtest(conn, parse_rule({
            "type": "threshold", "name": "motor hot", "metric": "motor_temp", "op": ">",
            "value": 100, "severity": "critical"}), time.time() - 120, time.time())
    finally:
        await conn.close()
    assert (would["device_id"], would["resolved_at"]) == ("well-a1", iso(row["resolved_at"]))
    assert would["fired_at"] <= iso(row["fired_at"])


@pytest.mark.timeout(120)
async def test_kill_9_while_pending_and_while_firing_neither_loses_nor_repeats(
        ingestor: ServiceProcess, alerts_factory: Callable[..., ServiceProcess],
        clients: Clients, db_url: str) -> None:
    hold = 8.0
    await add_rule(db_url, type="threshold", name="pip low", metric="pip", op="<", value=600,
                   for_seconds=hold)
    engine = alerts_factory(**FAST)
    device = clients.device("well-k1")
    send(device, "well-k1", pip=550.0)
    [pending] = await wait_until(lambda: alerts(db_url, "well-k1"),
                                 lambda rows: len(rows) == 1, what="a pending alert")
    assert pending["state"] == "pending"
    await asyncio.sleep(hold / 2)  # half its `for` gone before the crash
    engine.stop(signal.SIGKILL)
    restarted = datetime.now(UTC)
    engine = alerts_factory(**FAST)
    [fired] = await wait_until(lambda: alerts(db_url, "well-k1"),
                               lambda rows: rows[0]["state"] == "firing", timeout=30,
                               what="the pending alert fired after the restart")
    # On its stored timer: not before `for` elapsed, and not after a `for` counted afresh
    # from the restart (what an engine keeping timers in memory only would do).
    assert fired["fire_at"] == pending["active_since"] + timedelta(seconds=hold)
    assert fired["fire_at"] <= fired["fired_at"] < restarted + timedelta(seconds=hold)
    engine.stop(signal.SIGKILL)
    alerts_factory(**FAST)
    send(device, "well-k1", pip=540.0)  # still breaching: the open alert, not a new one
    send(device, "well-k1", pip=700.0)
    await wait_until(lambda: alerts(db_url, "well-k1"),
                     lambda rows: rows[-1]["state"] == "resolved", what="resolved")
    assert await events(db_url, "well-k1") == [
        ("pending", "pending"), ("firing", "firing"), ("resolved", "resolved")]
    assert len(await alerts(db_url, "well-k1")) == 1


@pytest.mark.timeout(120)
async def test_two_replicas_raise_one_alert_per_condition(
        ingestor: ServiceProcess, alerts_factory: Callable[..., ServiceProcess],
        clients: Clients, db_url: str, broker: RunningBroker) -> None:
    """Both in one consumer group, so each device's readings are split between them and
    both race on every (rule, device): the database's one-open-alert index decides."""
    await add_rule(db_url, type="threshold", name="vibration", metric="vibration", op=">",
                   value=3.0)
    await add_rule(db_url, type="range", name="vibration band", metric="vibration", low=0,
                   high=3.5, clear_high=3.0)
    pager = clients.connect("insa-subscriber")
    pager.subscribe("insa/alerts/#")
    for n in (0, 1):  # each replica with a broker account of its own, as docs/operations.md
        alerts_factory(INSA_ALERTS_CONSUMER=f"alerts-{n + 1}",
                       **replica_account(broker, ALERTS_SERVICE, n), **FAST)
    devices = [f"well-r{n}" for n in range(8)]
    senders = {d: clients.device(d) for d in devices}
    for _ in range(15):
        for device_id, device in senders.items():
            send(device, device_id, vibration=4.0)
        await asyncio.sleep(0.05)
    await wait_until(lambda: alerts(db_url), lambda rows: len(rows) >= 2 * len(devices),
                     timeout=30, what="alerts for every device")
    await asyncio.sleep(2)  # let any duplicate show itself
    rows = await alerts(db_url)
    assert sorted((r["rule_id"], r["device_id"]) for r in rows) == sorted(
        {(r["rule_id"], r["device_id"]) for r in rows}), "an alert was raised twice"
    assert len(rows) == 2 * len(devices)
    firing = await fetch(db_url, "SELECT alert_id FROM alert_events WHERE kind = 'firing'")
    assert len(firing) == len(rows)
    # Each event reached subscribers once: one outbox publisher at a time.
    published = [orjson.loads(m.payload)["id"] for m in pager.messages]
    assert sorted(published) == sorted(set(published)), "an event was published twice"
    assert len(published) == len(firing)


async def test_a_superseded_diagnosis_resolves_its_alert_saying_why(
        alerts_factory: Callable[..., ServiceProcess], clients: Clients,
        redis_server: RunningRedis, db_url: str) -> None:
    """Diagnostics replaces overload by overheating on one well (one developing failure):
    the overload alert resolves, its note naming the diagnosis that replaced it, before
    the overheating one fires. Entries on insa:diagnostics as the diagnostics service
    writes them; the built-in rules."""
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('well-s1')")
    conn = await db.connect(db_url)
    try:
        await load_defaults(conn)
    finally:
        await conn.close()
    alerts_factory(**FAST)
    subscriber = clients.connect("insa-subscriber")
    subscriber.subscribe("insa/alerts/#")
    stream = redis.Redis.from_url(redis_server.url)
    now = time.time()

    def diagnosis(n: int, code: str, cleared: bool, **evidence: str) -> None:
        ts = now - 60 + n
        stream.xadd(DIAGNOSTICS_STREAM, xadd_fields(encode_diagnosis("well-s1", int(ts * 1000), {
            "id": n, "device_id": "well-s1", "ts": iso(datetime.fromtimestamp(ts, UTC)),
            "code": code, "severity": "critical", "cleared": cleared, "confidence": 0.9,
            "evidence": evidence, "action": "check"})))

    diagnosis(1, "overload", cleared=False)
    subscriber.wait_for_messages(1, 15)
    diagnosis(2, "overload", cleared=True, superseded_by="overheating")
    diagnosis(3, "overheating", cleared=False)
    received = [orjson.loads(m.payload) for m in subscriber.wait_for_messages(3, 15)]
    assert [(m["rule"], m["event"]) for m in received] == [
        ("ESP diagnosis: overload", "firing"), ("ESP diagnosis: overload", "resolved"),
        ("ESP diagnosis: overheating", "firing")]
    assert received[1]["note"] == "overload superseded by diagnosis overheating"
    open_rows = await fetch(db_url, "SELECT r.name FROM alerts a JOIN rules r "
                                    "ON r.id = a.rule_id WHERE a.state <> 'resolved'")
    assert [r["name"] for r in open_rows] == ["ESP diagnosis: overheating"]
