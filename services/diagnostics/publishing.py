"""Committed diagnosis events out to `insa:diagnostics` and `insa/diagnostics/<device_id>`
through the `diagnoses` table as an outbox (shared/outbox.py)."""

from __future__ import annotations

import asyncpg
import orjson
import redis.asyncio as redis

from services.diagnostics.metrics import DiagnosticsMetrics
from shared.diagnosis import repository
from shared.mqtt import diagnostics_topic
from shared.mqtt_connection import MqttConnection
from shared.outbox import Outbox
from shared.streams import DIAGNOSTICS, encode_diagnosis
from shared.timefmt import utc_text


class Publisher(Outbox):
    what = "diagnosis outbox"

    def __init__(self, pool: asyncpg.Pool, redis_conn: redis.Redis,
                 mqtt: MqttConnection, metrics: DiagnosticsMetrics,
                 retry_max_delay: float) -> None:
        super().__init__(pool, redis_conn, mqtt, retry_max_delay)
        self.metrics = metrics

    async def unpublished(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        return await repository.unpublished(conn, limit)

    async def mark_published(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]
                             ) -> None:
        await repository.mark_published(conn, [row["id"] for row in rows])
        self.metrics.published.inc(len(rows))

    async def send(self, row: asyncpg.Record) -> None:
        event = {"id": row["id"], "device_id": row["device_id"],
                 "ts": utc_text(row["ts"]), "code": row["code"],
                 "severity": row["severity"], "cleared": row["cleared"],
                 "confidence": round(row["confidence"], 3), "evidence": row["evidence"],
                 "action": row["action"]}
        if row["metric"] is not None:
            event["metric"] = row["metric"]
        await self.redis.xadd(DIAGNOSTICS, encode_diagnosis(  # type: ignore[arg-type]
            row["device_id"], int(row["ts"].timestamp() * 1000), event))
        await self.mqtt.publish(diagnostics_topic(row["device_id"]), orjson.dumps(event))
