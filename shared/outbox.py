"""Publishing committed events from an outbox table to a Redis stream and MQTT.

Events are committed first (in the transaction that caused them) and published from
the table, oldest first, then marked; what a crash or an outage left unpublished goes
out later, so publication is at-least-once (each event's `id` lets subscribers drop a
repeat). Replicas take turns: a batch is published and marked under a transaction-level
advisory lock per outbox, so in the normal case each event goes out once, in order.
A service subclasses `Outbox` with its table's queries and message shape. The outbox
runs the service's broker connection (shared/mqtt_connection.py) for as long as it
publishes, so its last pass still has one.
"""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as redis
import structlog

from shared import db
from shared import redis_client as redis_errors
from shared.lifecycle import wait_any
from shared.mqtt_connection import MqttConnection, MqttUnavailable
from shared.retry import Stopped, retry_until_available

log = structlog.get_logger(__name__)
BATCH = 500
POLL_SECONDS = 2.0  # also picks up what another replica or a previous life left
CONNECT_WAIT_SECONDS = 5.0  # for the connection, before backing off


def _transient(exc: BaseException) -> bool:
    return db.is_transient(exc) or redis_errors.is_transient(exc) or \
        isinstance(exc, MqttUnavailable | OSError)


class Outbox:
    what = "outbox"

    def __init__(self, pool: asyncpg.Pool, redis_conn: redis.Redis,
                 mqtt: MqttConnection, retry_max_delay: float) -> None:
        self.pool = pool
        self.redis = redis_conn
        self.mqtt = mqtt
        self.retry_max_delay = retry_max_delay
        self.wake = asyncio.Event()

    # --- what a subclass provides ------------------------------------------------------
    async def unpublished(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        raise NotImplementedError

    async def send(self, row: asyncpg.Record) -> None:
        """Put one event on its stream and MQTT topic."""
        raise NotImplementedError

    async def mark_published(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]
                             ) -> None:
        raise NotImplementedError

    # --- the loop ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop`, then once more so what the last batch emitted goes out."""
        published = asyncio.Event()
        connection = asyncio.create_task(self.mqtt.run(published), name="mqtt")
        try:
            while True:
                stopping = stop.is_set()
                await retry_until_available(
                    self._publish_pending, transient=_transient, what=self.what,
                    max_delay=self.retry_max_delay, stop=None if stopping else stop)
                if stopping:
                    break
                await wait_any(self.wake, stop, timeout=POLL_SECONDS)
                self.wake.clear()
        except Stopped:
            pass
        finally:
            published.set()
            await connection

    async def _publish_pending(self) -> None:
        try:
            await asyncio.wait_for(self.mqtt.connected.wait(), CONNECT_WAIT_SECONDS)
        except TimeoutError:
            raise MqttUnavailable("not connected to the broker") from None
        while await self._publish_batch():
            pass

    async def _publish_batch(self) -> bool:
        """Publish the oldest unpublished batch and mark it, holding this outbox's
        publisher lock: one publisher at a time across replicas, so each event goes out
        once in the normal case and in the order it was committed. False when there was
        nothing to do (or another replica is publishing: it takes our rows too)."""
        failure: Exception | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))",
                                       f"insa-outbox:{self.what}"):
                return False
            rows = await self.unpublished(conn, BATCH)
            published: list[asyncpg.Record] = []
            for row in rows:
                try:
                    await self.send(row)
                except Exception as exc:
                    failure = exc
                    break
                published.append(row)
            # What went out before a failure is marked and not sent again on the retry
            # (unless the database is what failed: then a repeat is the price, ids tell).
            if published:
                await self.mark_published(conn, published)
        if failure is not None:
            raise failure
        return bool(rows)
