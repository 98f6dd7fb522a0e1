"""Ingestor entry point: wiring only (settings, connections, tasks)."""

from __future__ import annotations

import asyncio
from functools import partial

import structlog

from services.ingestor.flood_guard import FloodGuard
from services.ingestor.maintenance import (
    inactivity_sweep_period,
    mark_inactive_devices,
    trim_stream,
)
from services.ingestor.metrics import IngestorMetrics
from services.ingestor.mqtt_source import device_messages, for_this_replica
from services.ingestor.parsing import MessageParser
from services.ingestor.pipeline import Pipeline
from services.ingestor.settings import IngestorSettings
from shared import db
from shared.broker_control import BrokerControl
from shared.db import create_pool, ping
from shared.health import Health, listen_socket, probe_dependencies, serve_health
from shared.lifecycle import Lifecycle, run_periodically
from shared.redis_client import create_redis
from shared.redis_client import is_transient as redis_transient
from shared.service import run_service
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)


async def run(common: CommonSettings, settings: IngestorSettings) -> None:
    # The port first: taken, the service exits now and its supervisor restarts it.
    http = listen_socket(settings.http_host, settings.http_port)
    health = Health("postgres", "redis", "mqtt")
    # Neither connects yet: a start while PostgreSQL or Redis is down waits, not ready.
    pool = await create_pool(common.database_url.get_secret_value(), max_size=4,
                             application_name="insa-ingestor")
    redis_client = create_redis(common.redis_url.get_secret_value())
    metrics = IngestorMetrics()
    partition = settings.owned()
    guard = FloodGuard(settings, pool, metrics, partition.owns_device)
    connection = device_messages(common, settings, health)
    control = BrokerControl(connection)  # the flood guard's, on the same connection
    pipeline = Pipeline(settings, pool, redis_client, metrics, health,
                        MessageParser(settings, guard.admit, guard.detail), intake=connection)
    connection.on_message = for_this_replica(connection, partition, pipeline.on_delivery,
                                             metrics.other_partition.inc)
    lifecycle = Lifecycle(settings.drain_seconds, health)
    drained = asyncio.Event()

    async def start(lc: Lifecycle) -> None:
        async def flush_until_drained() -> None:
            await pipeline.run(lc.stopping)
            drained.set()

        lc.spawn("flush", flush_until_drained())
        lc.spawn("mqtt", connection.run(drained))
        lc.spawn("inactivity", run_periodically(
            partial(mark_inactive_devices, settings, pool, metrics),
            every=inactivity_sweep_period(settings), stop=lc.stopping, what="inactivity",
            transient=db.is_database_error))
        lc.spawn("stream-trim", run_periodically(
            partial(trim_stream, settings, redis_client, metrics),
            every=settings.stream_trim_interval_seconds, stop=lc.stopping, what="stream-trim",
            transient=redis_transient))
        lc.spawn("flood-guard", guard.run(lc.stopping, control))
        lc.spawn("probe", probe_dependencies(
            health, {"postgres": lambda: ping(pool), "redis": redis_client.ping},
            settings.probe_interval_seconds, lc.stopping))
        lc.spawn("http", serve_health(health, http, lc.stopped), drains=False)
        log.info("ingestor started", client_id=settings.mqtt_username,
                 partition=f"{settings.partition}/{settings.partitions}",
                 http_port=settings.http_port)

    try:
        await lifecycle.run(start)
    finally:
        await redis_client.aclose()
        await pool.close()
        # Anything still pending was not acked: the broker redelivers it to the next one.
        log.info("ingestor stopped", unacked=pipeline.flow.pending,
                 acks_skipped=pipeline.acks_skipped)


def main() -> None:
    run_service("ingestor", IngestorSettings, run)


if __name__ == "__main__":
    main()
