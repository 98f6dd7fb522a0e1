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
from services.ingestor.mqtt_source import OPTIONS, device_messages, for_this_replica
from services.ingestor.parsing import MessageParser
from services.ingestor.pipeline import Pipeline
from services.ingestor.settings import IngestorSettings
from services.ingestor.sparkplug_host import SparkplugHost
from services.ingestor.subscriptions import PartitionSubscriptions
from shared import db
from shared.broker_control import BrokerControl
from shared.lifecycle import Lifecycle, run_periodically
from shared.redis_client import is_transient as redis_transient
from shared.service import Worker, run_service, tune_gc_for_throughput, worker
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)


async def run(common: CommonSettings, settings: IngestorSettings) -> None:
    # No session state (its staging tables are temporary ones it keeps on purpose): no
    # reset query each time a batch gives its connection back.
    # A connection per commit in flight, and two for the periodic jobs beside them.
    async with worker("ingestor", common, settings, pool_size=settings.commits_in_flight + 2,
                      probe_interval=settings.probe_interval_seconds,
                      session_state=False) as w:
        await serve(common, settings, w)


async def serve(common: CommonSettings, settings: IngestorSettings, w: Worker) -> None:
    health, pool, redis_client = w.health, w.pool, w.redis
    metrics = IngestorMetrics()
    partition = settings.owned()
    guard = FloodGuard(settings, pool, metrics, partition.owns_device)
    connection = device_messages(common, settings, health)
    control = BrokerControl(connection)  # the flood guard's, on the same connection
    pipeline = Pipeline(settings, pool, redis_client, metrics, health,
                        MessageParser(settings, guard.admit, guard.detail), intake=connection)
    connection.on_message = for_this_replica(connection, partition, pipeline.on_delivery,
                                             metrics.other_partition.inc)
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
        if settings.partitions > 1:
            subscriptions = PartitionSubscriptions(connection, partition, pool, OPTIONS,
                                                   health, metrics)
            lc.spawn("subscriptions", subscriptions.run(
                lc.stopping, settings.subscription_refresh_seconds))
        if settings.sparkplug_host_id:
            host = SparkplugHost(common, settings, health, pipeline)
            pipeline.pause_with_intake(host)
            lc.spawn("sparkplug", host.run(lc.stopping))
        tune_gc_for_throughput()
        log.info("ingestor started", client_id=settings.mqtt_username,
                 partition=f"{settings.partition}/{settings.partitions}",
                 sparkplug_host=settings.sparkplug_host_id or None,
                 http_port=settings.http_port)

    try:
        await w.run(start)
    finally:
        # Anything still pending was not acked: the broker redelivers it to the next one.
        log.info("ingestor stopped", unacked=pipeline.flow.pending,
                 acks_skipped=pipeline.acks_skipped)


def main() -> None:
    run_service("ingestor", IngestorSettings, run)


if __name__ == "__main__":
    main()
