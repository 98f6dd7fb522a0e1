"""The store under engines that race: each transition is written only if the alert is
still as that engine saw it, so replicas never re-notify or escalate one alert twice."""

from __future__ import annotations

import time

from shared import db
from shared.alerting import store
from shared.alerting.evaluation import Engine, Transition
from shared.alerting.rules import parse_rule, stored_form


async def test_two_engines_renotify_and_escalate_an_alert_once(db_url: str) -> None:
    rule = parse_rule({"type": "threshold", "name": "hot", "metric": "motor_temp", "op": ">",
                       "value": 100, "severity": "warning", "renotify_seconds": 60,
                       "escalation": {"after_seconds": 150, "severity": "critical"}})
    conn = await db.connect(db_url)
    try:
        await conn.execute("INSERT INTO devices (device_id) VALUES ('W-1')")
        rule_id = await conn.fetchval("INSERT INTO rules (name, definition) VALUES ($1, $2) "
                                      "RETURNING id", rule.name, stored_form(rule))
        engines = [Engine(), Engine()]
        for engine in engines:
            engine.set_rules({rule_id: rule}, 0)
        t0 = time.time() - 1000

        async def commit(engine: Engine, transitions: list[Transition]) -> set[tuple[int, str]]:
            refused = await store.commit(conn, transitions, {})
            stored = await store.open_alerts(conn, refused)
            for key in refused:  # as the live watcher does
                engine.adopt(key, stored.get(key))
            return refused

        assert await commit(engines[0], engines[0].observe_reading(
            "W-1", t0, {"motor_temp": 120.0})) == set()
        key = (rule_id, "W-1")
        engines[1].adopt(key, (await store.open_alerts(conn))[key])
        for now in (t0 + 70, t0 + 160):  # a re-notify, then the escalation, due on both
            results = [await commit(engine, engine.tick(now)) for engine in engines]
            assert results == [set(), {key}]
        kinds = await conn.fetch("SELECT kind, severity FROM alert_events ORDER BY id")
        assert [(r["kind"], r["severity"]) for r in kinds] == [
            ("firing", "warning"), ("renotify", "warning"), ("escalated", "critical")]
    finally:
        await conn.close()
