"""Shelving in the engine and the store: a shelved alert is neither re-notified nor
escalated, its shelf's end is announced once (`unshelved`) and re-notify counts from it,
and the store refuses what a shelf forbids to an engine that has not heard of it yet.
(Through the real services and the API: tests/services/api/test_alert_shelving.py.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from shared import db
from shared.alerting import store
from shared.alerting.evaluation import SHELF_ENDED, Engine, Transition
from shared.alerting.rules import parse_rule, stored_form
from shared.errors import Conflict
from tests.utils.alert_engine import engine_with, feed, hot, seen, ticks

KEY = (1, "W-1")
NOISY = {"renotify_seconds": 60, "escalation": {"after_seconds": 150, "severity": "critical"}}


# --- the pure engine -----------------------------------------------------------------------
def test_a_shelf_stops_repeats_and_escalation_then_its_end_is_announced() -> None:
    engine = engine_with(hot(**NOISY))
    assert feed(engine, "motor_temp", [(0, 160.0)]) == [("firing", 0)]
    engine.open[KEY].shelved_until = 200.0  # as adopted from the row a person shelved
    assert ticks(engine, [70, 130, 160, 199.9]) == []  # re-notify and escalation were due
    [ended] = engine.tick(200)
    assert (ended.kind, ended.before, ended.at, ended.note, ended.severity) == \
        ("unshelved", "firing", 200, SHELF_ENDED, "warning")
    assert engine.open[KEY].shelved_until is None
    # The escalation that came due meanwhile follows, and re-notify counts from the last
    # notice as ever.
    assert ticks(engine, [201, 260, 261, 320, 321]) == [
        ("escalated", 201), ("renotify", 261), ("renotify", 321)]


def test_without_escalation_re_notify_counts_from_the_shelf_s_end() -> None:
    engine = engine_with(hot(renotify_seconds=60))
    feed(engine, "motor_temp", [(0, 160.0)])
    engine.open[KEY].shelved_until = 90.0
    assert ticks(engine, [60, 90, 149, 150]) == [("unshelved", 90), ("renotify", 150)]


def test_readings_while_shelved_keep_the_alert_and_a_clear_still_resolves_it() -> None:
    engine = engine_with(hot(**NOISY))
    feed(engine, "motor_temp", [(0, 160.0)])
    engine.open[KEY].shelved_until = 500.0
    assert feed(engine, "motor_temp", [(10, 170.0), (20, 165.0)]) == []
    assert engine.open[KEY].value == 165.0  # recorded, not announced
    assert feed(engine, "motor_temp", [(30, 140.0)]) == [("resolved", 30)]
    assert ticks(engine, [600]) == []  # nothing left to unshelve


def test_an_acknowledged_alert_is_unshelved_acknowledged_and_not_renotified() -> None:
    engine = engine_with(hot(**NOISY))
    feed(engine, "motor_temp", [(0, 160.0)])
    alert = engine.open[KEY]
    alert.state, alert.shelved_until = "acknowledged", 100.0
    [ended] = engine.tick(100)
    assert (ended.kind, ended.before, ended.alert.state) == \
        ("unshelved", "acknowledged", "acknowledged")
    assert alert.last_notified_at == 0  # an acknowledged alert is not re-notified
    assert seen(engine.tick(1000)) == []


# --- the store, against engines that may not have heard of a shelf -----------------------
@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(db_url)
    yield connection
    await connection.close()


async def firing(conn: asyncpg.Connection, at: float) -> tuple[Engine, int]:
    """An engine with a noisy rule whose alert on W-1 fired at `at`, committed."""
    rule = parse_rule({"type": "threshold", "name": "hot", "metric": "motor_temp", "op": ">",
                       "value": 100, **NOISY})
    await conn.execute("INSERT INTO devices (device_id) VALUES ('W-1')")
    rule_id = await conn.fetchval("INSERT INTO rules (name, definition) VALUES ($1, $2) "
                                  "RETURNING id", rule.name, stored_form(rule))
    engine = Engine()
    engine.set_rules({rule_id: rule}, at)
    transitions = engine.observe_reading("W-1", at, {"motor_temp": 120.0})
    assert await commit(conn, engine, transitions) == set()
    return engine, transitions[0].alert.id or 0


async def commit(conn: asyncpg.Connection, engine: Engine,
                 transitions: list[Transition]) -> set[tuple[int, str]]:
    refused = await store.commit(conn, transitions, {})
    stored = await store.open_alerts(conn, refused)
    for key in refused:  # as the live watcher does
        engine.adopt(key, stored.get(key))
    return refused


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def kinds(conn: asyncpg.Connection) -> list[tuple[str, str, str | None]]:
    rows = await conn.fetch("SELECT kind, actor, note FROM alert_events ORDER BY id")
    return [(r["kind"], r["actor"], r["note"]) for r in rows]


async def test_a_repeat_of_a_shelved_row_is_refused_and_the_engine_adopts_the_shelf(
        conn: asyncpg.Connection) -> None:
    t0 = float(int(time.time()) - 1000)  # whole seconds: exact through timestamptz
    engine, alert_id = await firing(conn, t0)
    await store.shelve(conn, alert_id, "user:ana", at(t0 + 300), "pump swap")
    # This engine missed the notification: it re-notifies and escalates on its own view.
    (key,) = engine.open
    assert await commit(conn, engine, engine.tick(t0 + 70)) == {key}
    assert engine.open[key].shelved_until == t0 + 300
    assert await commit(conn, engine, engine.tick(t0 + 160)) == set()  # nothing made now
    assert await commit(conn, engine, engine.tick(t0 + 300)) == set()
    assert await kinds(conn) == [("firing", "engine", None), ("shelved", "user:ana", "pump swap"),
                                 ("unshelved", "engine", SHELF_ENDED)]
    row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert_id)
    assert (row["shelved_until"], row["shelved_by"], row["last_notified_at"]) == \
        (None, None, at(t0 + 300))


async def test_a_shelf_replaced_or_ended_by_a_person_is_not_unshelved_again(
        conn: asyncpg.Connection) -> None:
    t0 = float(int(time.time()) - 1000)  # whole seconds: exact through timestamptz
    engine, alert_id = await firing(conn, t0)
    await store.shelve(conn, alert_id, "user:ana", at(t0 + 100))
    (key,) = engine.open
    engine.adopt(key, (await store.open_alerts(conn))[key])
    await store.shelve(conn, alert_id, "user:bob", at(t0 + 400), "longer")  # not heard of
    assert await commit(conn, engine, engine.tick(t0 + 100)) == {key}
    assert engine.open[key].shelved_until == t0 + 400
    await store.unshelve(conn, alert_id, "user:cid", "pump back")  # not heard of either
    assert await commit(conn, engine, engine.tick(t0 + 400)) == {key}
    assert engine.open[key].shelved_until is None
    assert [k[:2] for k in await kinds(conn)] == [
        ("firing", "engine"), ("shelved", "user:ana"), ("shelved", "user:bob"),
        ("unshelved", "user:cid")]
    shelves = await conn.fetch("SELECT shelved_until FROM alert_events WHERE kind = 'shelved' "
                               "ORDER BY id")
    assert [r["shelved_until"] for r in shelves] == [at(t0 + 100), at(t0 + 400)]
    with pytest.raises(Conflict, match=f"alert {alert_id} is not shelved"):
        await store.unshelve(conn, alert_id, "user:cid")


async def test_any_resolve_ends_the_shelf(conn: asyncpg.Connection) -> None:
    t0 = float(int(time.time()) - 1000)  # whole seconds: exact through timestamptz
    engine, alert_id = await firing(conn, t0)
    await store.shelve(conn, alert_id, "user:ana", at(t0 + 5000))
    (key,) = engine.open
    engine.adopt(key, (await store.open_alerts(conn))[key])
    assert await commit(conn, engine, engine.observe_reading(
        "W-1", t0 + 10, {"motor_temp": 90.0})) == set()  # the engine's resolve
    row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert_id)
    assert (row["state"], row["shelved_until"], row["shelved_by"]) == ("resolved", None, None)
    with pytest.raises(Conflict, match="only a firing or acknowledged alert can be shelved"):
        await store.shelve(conn, alert_id, "user:ana", at(t0 + 5000))
    # A person's resolve too, of an acknowledged shelved alert.
    assert await commit(conn, engine, engine.observe_reading(
        "W-1", t0 + 20, {"motor_temp": 130.0})) == set()  # hot again: a new alert
    second = engine.open[key].id
    assert second is not None and second != alert_id
    await store.acknowledge(conn, second, "user:ana", "on it")
    await store.shelve(conn, second, "user:ana", at(t0 + 5000), "parts ordered")
    await store.resolve(conn, second, "user:bob", "replaced")
    row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", second)
    assert (row["state"], row["resolved_by"], row["shelved_until"]) == \
        ("resolved", "user:bob", None)
    # The database itself refuses a shelf on an alert that is not open.
    with pytest.raises(asyncpg.CheckViolationError, match="alerts_shelf_open"):
        await conn.execute("UPDATE alerts SET shelved_until = now(), shelved_by = 'x' "
                           "WHERE id = $1", second)
