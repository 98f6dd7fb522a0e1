"""Alert events out to `insa:alerts` and `insa/alerts/<severity>/<device_id>` through the
`alert_events` table as an outbox (shared/outbox.py); a rule's actions are queued in
the transaction that marks the event published, so each is delivered once per event.

The message (docs/payloads.md, "Alert events"): the event's id, the alert's id, rule
and device, the state and severity after the event, the value and threshold, the
message, the alert's times, and its shelf. Every event goes out and runs the rule's
actions, a shelved alert's too: a shelf stops the engine's repeats and escalation
(shared/alerting/evaluation.py), not the news that the alert changed, which the systems
mirroring alerts (alarm lists, incident tools) need to stay true.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as redis
from pydantic import TypeAdapter

from services.alerts import actions
from services.alerts.metrics import AlertsMetrics
from shared.alerting.rules import Action, MqttAction
from shared.mqtt import alerts_topic
from shared.mqtt_connection import MqttConnection
from shared.outbox import Outbox
from shared.streams import ALERTS
from shared.timefmt import utc_text

ACTIONS = TypeAdapter(list[Action])


def iso(at: datetime | None) -> str | None:
    return None if at is None else utc_text(at)


def event_message(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "alert_id": row["alert_id"], "rule_id": row["rule_id"],
            "rule": row["rule"], "device_id": row["device_id"], "event": row["kind"],
            "state": row["state"], "severity": row["severity"], "value": row["value"],
            "threshold": row["threshold"], "message": row["message"],
            "at": iso(row["at"]), "actor": row["actor"], "note": row["note"],
            "active_since": iso(row["active_since"]), "started_at": iso(row["fired_at"]),
            "acknowledged_at": iso(row["acknowledged_at"]),
            "acknowledged_by": row["acknowledged_by"],
            "resolved_at": iso(row["resolved_at"]), "resolved_by": row["resolved_by"],
            "shelved_until": iso(row["shelved_until"]), "shelved_by": row["shelved_by"],
            "labels": row["definition"].get("labels", {})}


def _actions(row: asyncpg.Record) -> list[Action]:
    return ACTIONS.validate_python(row["definition"].get("actions", []))


class AlertPublisher(Outbox):
    what = "alert outbox"

    def __init__(self, pool: asyncpg.Pool, redis_conn: redis.Redis,
                 mqtt: MqttConnection, metrics: AlertsMetrics, retry_max_delay: float,
                 on_queued: Callable[[], None]) -> None:
        super().__init__(pool, redis_conn, mqtt, retry_max_delay)
        self.metrics = metrics
        self.on_queued = on_queued

    async def unpublished(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        return await conn.fetch(
            """
            SELECT e.id, e.alert_id, e.kind, e.state, e.severity, e.at, e.actor, e.note,
                   COALESCE(e.value, a.value) AS value, a.rule_id, a.device_id,
                   a.threshold, a.message, a.active_since, a.fired_at, a.acknowledged_at,
                   a.acknowledged_by, a.resolved_at, a.resolved_by,
                   -- The shelf after this event: the alert's, but exact for the events
                   -- about the shelf, whatever happened between them and publication.
                   CASE e.kind WHEN 'shelved' THEN e.shelved_until WHEN 'unshelved' THEN NULL
                        ELSE a.shelved_until END AS shelved_until,
                   CASE e.kind WHEN 'shelved' THEN e.actor WHEN 'unshelved' THEN NULL
                        ELSE a.shelved_by END AS shelved_by,
                   r.name AS rule, r.definition
            FROM alert_events e JOIN alerts a ON a.id = e.alert_id
            JOIN rules r ON r.id = a.rule_id
            WHERE e.published_at IS NULL ORDER BY e.id LIMIT $1
            """, limit)

    async def send(self, row: asyncpg.Record) -> None:
        body = orjson.dumps(event_message(row))
        await self.redis.xadd(ALERTS, {"alert": body})
        await self.mqtt.publish(alerts_topic(row["severity"], row["device_id"]), body)
        # A rule's MQTT actions go out on this same connection: the broker binds the
        # insa-alerts account to one client id, so a second connection would knock
        # this one off. They are as at-least-once as the event itself.
        for action in _actions(row):
            if isinstance(action, MqttAction):
                await self.mqtt.publish(action.topic, body, qos=action.qos)

    async def mark_published(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]
                             ) -> None:
        queued = 0
        async with conn.transaction():
            await conn.execute("UPDATE alert_events SET published_at = now() "
                               "WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
            for row in rows:
                rule_actions = [a for a in _actions(row) if not isinstance(a, MqttAction)]
                if rule_actions:
                    queued += await actions.enqueue(conn, row["id"], rule_actions,
                                                    event_message(row))
        self.metrics.published.inc(len(rows))
        if queued:
            self.on_queued()
