"""Diagnostics entry point: wiring only (settings, connections, tasks)."""

from __future__ import annotations

import asyncio
from functools import partial

import asyncpg
import structlog

from services.diagnostics.judging import Judge
from services.diagnostics.metrics import DiagnosticsMetrics
from services.diagnostics.publishing import Publisher
from services.diagnostics.settings import DiagnosticsSettings
from shared import db, redis_client
from shared.diagnosis import repository
from shared.diagnosis.engine import DiagnosisEngine
from shared.lifecycle import Lifecycle, run_periodically
from shared.mqtt_connection import MqttConnection
from shared.service import Worker, run_service, worker
from shared.settings import CommonSettings
from shared.streams import StreamConsumer

log = structlog.get_logger(__name__)


async def refresh_limits(engine: DiagnosisEngine, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        engine.limits, engine.device_types, engine.equipment = \
            await repository.load_limits(conn)


async def report_lag(consumer: StreamConsumer, metrics: DiagnosticsMetrics) -> None:
    lag, pending = await consumer.lag()
    metrics.lag.set(lag)
    metrics.pending.set(pending)


async def run(common: CommonSettings, settings: DiagnosticsSettings) -> None:
    async with worker("diagnostics", common, settings, pool_size=4,
                      probe_interval=settings.probe_interval_seconds) as w:
        await serve(common, settings, w)


async def serve(common: CommonSettings, settings: DiagnosticsSettings, w: Worker) -> None:
    health, pool, redis_conn = w.health, w.pool, w.redis
    metrics = DiagnosticsMetrics()
    engine = DiagnosisEngine(max_devices=settings.max_devices)
    mqtt = MqttConnection(common, settings.mqtt_username,
                          settings.mqtt_password.get_secret_value(), health=health)
    publisher = Publisher(pool, redis_conn, mqtt, metrics, settings.retry_max_delay_seconds)
    judge = Judge(engine, pool, settings.owned(), metrics, health,
                  replay_readings=settings.replay_readings,
                  retry_max_delay=settings.retry_max_delay_seconds,
                  on_committed=publisher.wake.set)
    consumer = StreamConsumer(redis_conn, settings.stream, settings.group, settings.consumer,
                              settings.consumer_settings(), transient=db.is_transient)
    judged = asyncio.Event()

    async def start(lc: Lifecycle) -> None:
        async def judge_until_stopped() -> None:
            await consumer.run(judge.handle, lc.stopping)
            judged.set()

        lc.spawn("judge", judge_until_stopped())
        lc.spawn("publish", publisher.run(judged))
        lc.spawn("limits", run_periodically(
            partial(refresh_limits, engine, pool), every=settings.limits_refresh_seconds,
            stop=lc.stopping, what="limits", transient=db.is_database_error))
        lc.spawn("lag", run_periodically(
            partial(report_lag, consumer, metrics), every=settings.probe_interval_seconds,
            stop=lc.stopping, what="lag", transient=redis_client.is_transient))
        await refresh_limits(engine, pool)
        log.info("diagnostics started", group=settings.group, consumer=settings.consumer,
                 http_port=settings.http_port)

    try:
        await w.run(start)
    finally:
        log.info("diagnostics stopped", readings_skipped=engine.skipped)


def main() -> None:
    run_service("diagnostics", DiagnosticsSettings, run)


if __name__ == "__main__":
    main()
