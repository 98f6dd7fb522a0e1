"""Alert engine entry point: wiring only (settings, connections, tasks)."""

from __future__ import annotations

import asyncio
from functools import partial

import structlog

from services.alerts.actions import DeliveryWorker
from services.alerts.metrics import AlertsMetrics
from services.alerts.notifications import listen
from services.alerts.publishing import AlertPublisher
from services.alerts.settings import AlertsSettings
from services.alerts.watching import Watcher
from shared import db, redis_client
from shared.alerting.evaluation import Engine
from shared.alerting.store import CHANGED_CHANNEL
from shared.lifecycle import Lifecycle, run_periodically
from shared.mqtt_connection import MqttConnection
from shared.service import Worker, run_service, worker
from shared.settings import CommonSettings
from shared.streams import StreamConsumer

log = structlog.get_logger(__name__)
RULES_CHANNEL = "insa_rules"


async def report_lag(consumers: list[StreamConsumer], metrics: AlertsMetrics) -> None:
    for consumer in consumers:
        lag, _ = await consumer.lag()
        metrics.lag.labels(consumer.stream).set(lag)


async def run(common: CommonSettings, settings: AlertsSettings) -> None:
    async with worker("alerts", common, settings, pool_size=6,
                      probe_interval=settings.probe_interval_seconds) as w:
        await serve(common, settings, w)


async def serve(common: CommonSettings, settings: AlertsSettings, w: Worker) -> None:
    health, pool, redis_conn = w.health, w.pool, w.redis
    dsn = common.database_url.get_secret_value()  # the rules listener connects on its own
    metrics = AlertsMetrics()
    mqtt = MqttConnection(common, settings.mqtt_username,
                          settings.mqtt_password.get_secret_value(), health=health)
    worker = DeliveryWorker(pool, settings, metrics)
    publisher = AlertPublisher(pool, redis_conn, mqtt, metrics, settings.retry_max_delay_seconds,
                               on_queued=worker.wake.set)
    watcher = Watcher(Engine(), pool, settings.owned(),
                      metrics, health, retry_max_delay=settings.retry_max_delay_seconds,
                      on_committed=publisher.wake.set, batch=settings.batch)
    consumers = [StreamConsumer(redis_conn, stream, settings.group, settings.consumer,
                                settings.consumer_settings(), transient=db.is_transient)
                 for stream in (settings.telemetry_stream, settings.diagnostics_stream)]
    evaluated = asyncio.Event()

    async def start(lc: Lifecycle) -> None:
        await watcher.load()

        async def evaluate_until_stopped() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(consumers[0].run(watcher.handle_telemetry, lc.stopping))
                group.create_task(consumers[1].run(watcher.handle_diagnoses, lc.stopping))
            evaluated.set()

        lc.spawn("evaluate", evaluate_until_stopped())
        lc.spawn("timer", run_periodically(
            watcher.tick, every=settings.tick_seconds, stop=lc.stopping, what="alert timer",
            transient=db.is_database_error))
        published = asyncio.Event()

        async def publish_until_evaluated() -> None:
            try:
                await publisher.run(evaluated)
            finally:
                published.set()

        lc.spawn("publish", publish_until_evaluated())
        # Until the publisher's last pass: the actions it queues while draining go out now,
        # not at the next start (within the drain deadline).
        lc.spawn("deliver", worker.run(published))
        lc.spawn("rules", listen(dsn, {RULES_CHANNEL: lambda _: watcher.reload_rules(),
                                       CHANGED_CHANNEL: watcher.reread_alerts},
                                 on_reconnect=watcher.reload_rules, stop=lc.stopping))
        lc.spawn("devices", run_periodically(
            watcher.refresh_devices, every=settings.catalog_refresh_seconds,
            stop=lc.stopping, what="device catalog", transient=db.is_database_error))
        lc.spawn("lag", run_periodically(
            partial(report_lag, consumers, metrics), every=settings.probe_interval_seconds,
            stop=lc.stopping, what="lag", transient=redis_client.is_transient))
        log.info("alerts started", group=settings.group, consumer=settings.consumer,
                 http_port=settings.http_port)

    try:
        await w.run(start)
    finally:
        log.info("alerts stopped")


def main() -> None:
    run_service("alerts", AlertsSettings, run)


if __name__ == "__main__":
    main()
