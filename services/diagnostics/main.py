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
from shared.health import Health, listen_socket, probe_dependencies, serve_health
from shared.lifecycle import Lifecycle, run_periodically
from shared.mqtt_connection import MqttConnection
from shared.service import run_service
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
    # The port first: taken, the service exits now and its supervisor restarts it.
    http = listen_socket(settings.http_host, settings.http_port)
    health = Health("postgres", "redis", "mqtt")
    pool = await db.create_pool(common.database_url.get_secret_value(), max_size=4,
                                application_name="insa-diagnostics")
    redis_conn = redis_client.create_redis(common.redis_url.get_secret_value())
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
    lifecycle = Lifecycle(settings.drain_seconds, health)
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
        lc.spawn("probe", probe_dependencies(
            health, {"postgres": lambda: db.ping(pool), "redis": redis_conn.ping},
            settings.probe_interval_seconds, lc.stopping))
        lc.spawn("http", serve_health(health, http, lc.stopped), drains=False)
        await refresh_limits(engine, pool)
        log.info("diagnostics started", group=settings.group, consumer=settings.consumer,
                 http_port=settings.http_port)

    try:
        await lifecycle.run(start)
    finally:
        await redis_conn.aclose()
        await pool.close()
        log.info("diagnostics stopped", readings_skipped=engine.skipped)


def main() -> None:
    run_service("diagnostics", DiagnosticsSettings, run)


if __name__ == "__main__":
    main()
