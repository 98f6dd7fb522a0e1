"""A partitioned replica's subscriptions: the topics of its own devices and gateways only,
so the broker sends each replica about 1/N of the messages (docs/architecture.md,
"Subscriptions, replicas and broker restarts").

MQTT filters cannot hash, so a replica subscribes to each of its registered devices'
and gateways' topics by name, in its persistent session (the broker keeps plain
subscriptions, and queues for them, across its own restarts and the replica's). It
learns new registrations by polling the catalog (`devices.id` only grows, so that is one
index range per poll), and re-reads the whole catalog now and then to let go of
deleted ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.ingestor.metrics import IngestorMetrics
from shared import db
from shared.health import Health
from shared.lifecycle import sleep_or_stop
from shared.mqtt import device_filters, gateway_filters
from shared.mqtt_connection import MqttConnection
from shared.partition import Partition

log = structlog.get_logger(__name__)
FULL_REFRESH_SECONDS = 300.0
HEALTH_KEY = "subscriptions"


class PartitionSubscriptions:
    def __init__(self, connection: MqttConnection, partition: Partition, pool: asyncpg.Pool,
                 options: SubscribeOptions, health: Health, metrics: IngestorMetrics) -> None:
        self.connection, self.partition, self.pool = connection, partition, pool
        self.options, self.health, self.metrics = options, health, metrics
        self.filters: dict[str, tuple[str, ...]] = {}  # device or gateway -> its filters
        self._last_device = 0  # the highest devices.id seen
        self._last_full = -FULL_REFRESH_SECONDS
        # Not ready until its devices are subscribed: a new session has no subscription,
        # and what the broker takes for no subscriber is gone.
        health.failing(HEALTH_KEY, "this partition's devices not yet subscribed")

    async def run(self, stop: asyncio.Event, every: float) -> None:
        """Refresh now and then every `every` seconds until `stop` (a database outage
        skips rounds; the subscriptions held stay)."""
        while True:
            try:
                await self.refresh()
                self.health.ok(HEALTH_KEY)
            except Exception as exc:
                if not db.is_database_error(exc):
                    raise
                log.warning("partition subscriptions not refreshed", error=str(exc))
            if await sleep_or_stop(stop, every):
                return

    async def refresh(self) -> None:
        """Subscribe to what was registered since the last call (everything, the first
        time and every FULL_REFRESH_SECONDS, which also unsubscribes what was deleted)."""
        full = time.monotonic() - self._last_full >= FULL_REFRESH_SECONDS
        async with self.pool.acquire() as conn:
            devices = await conn.fetch(
                "SELECT id, device_id FROM devices WHERE id > $1 ORDER BY id",
                0 if full else self._last_device)
            gateways = await conn.fetch("SELECT gateway_id FROM gateways")
        if devices:
            self._last_device = max(self._last_device, devices[-1]["id"])
        wanted = {d["device_id"]: device_filters(d["device_id"]) for d in devices
                  if self.partition.owns_device(d["device_id"])}
        wanted.update((g["gateway_id"], gateway_filters(g["gateway_id"])) for g in gateways
                      if self.partition.owns_device(g["gateway_id"]))
        if full:
            gone = self.filters.keys() - wanted.keys()
            self.connection.unsubscribe(_flat(self.filters.pop(name) for name in gone))
            self._last_full = time.monotonic()
        new = {name: f for name, f in wanted.items() if name not in self.filters}
        self.connection.subscribe(_flat(new.values()), self.options)
        self.filters.update(new)
        self.metrics.subscribed.set(len(self.filters))
        if new or full:
            log.info("partition subscriptions", added=len(new), devices_and_gateways=len(
                self.filters), partition=f"{self.partition.index}/{self.partition.count}")


def _flat(groups: Iterable[tuple[str, ...]]) -> list[str]:
    return [f for group in groups for f in group]
