"""A service's entry point: settings, logging, then its asyncio main, with an exit
status a supervisor can act on; and what every worker service's main sets up the same
way (`worker`)."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as redis
import structlog

from shared import db
from shared import settings as shared_settings
from shared.health import Health, listen_socket, probe_dependencies, serve_health
from shared.lifecycle import EXIT_FAILED, Lifecycle, StartupError, describe, leaf
from shared.logging import configure_logging
from shared.redis_client import create_redis
from shared.settings import CommonSettings, ServiceSettings

log = structlog.get_logger(__name__)
S = TypeVar("S", bound=ServiceSettings)


def run_service(service: str, settings_cls: type[S],
                main: Callable[[CommonSettings, S], Coroutine[Any, Any, None]]) -> None:
    """Load settings, then `asyncio.run(main(common, settings))`. Bad settings, a part that
    cannot start (a port in use) or one that fails later each end the process with one
    clear log line and a non-zero status, so the supervisor restarts it."""
    try:
        common, settings = shared_settings.load(settings_cls)
    except ValueError as exc:  # pydantic's ValidationError is one
        configure_logging(service)
        log.error(f"{service} could not start: invalid settings", error=str(exc),
                  exit_status=EXIT_FAILED)
        sys.exit(EXIT_FAILED)
    configure_logging(service, common.log_level, common.log_format)
    try:
        asyncio.run(main(common, settings))
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        startup = isinstance(leaf(exc), StartupError)
        log.error(f"{service} {'could not start' if startup else 'failed'}; exiting",
                  error=describe(exc), exit_status=EXIT_FAILED, exc_info=not startup)
        sys.exit(EXIT_FAILED)


@dataclass(frozen=True)
class Worker:
    """What the worker services (ingestor, diagnostics, alerts) have in common: readiness
    over PostgreSQL, Redis and the broker, a pool and a Redis client, the lifecycle that
    runs their parts, and the health and metrics port. Each builds its own parts and
    broker connection on these."""

    health: Health
    pool: asyncpg.Pool
    redis: redis.Redis
    lifecycle: Lifecycle
    http: socket.socket
    probe_interval: float

    async def run(self, start: Callable[[Lifecycle], Awaitable[None]]) -> None:
        """Run the service until it is stopped or a part fails: the dependency probe and
        the health server first (so a start that waits for a dependency is live and says
        what it waits for), then `start`, which spawns the service's own parts."""
        async def started(lc: Lifecycle) -> None:
            lc.spawn("probe", probe_dependencies(
                self.health, {"postgres": lambda: db.ping(self.pool), "redis": self.redis.ping},
                self.probe_interval, lc.stopping))
            lc.spawn("http", serve_health(self.health, self.http, lc.stopped), drains=False)
            await start(lc)

        await self.lifecycle.run(started)


@asynccontextmanager
async def worker(service: str, common: CommonSettings, settings: ServiceSettings, *,
                 pool_size: int, probe_interval: float,
                 session_state: bool = True) -> AsyncIterator[Worker]:
    """A worker's common parts; Redis and the pool are closed on the way out, whatever
    happened. `session_state`: as db.create_pool's."""
    # The port first: taken, the service exits now and its supervisor restarts it.
    http = listen_socket(settings.http_host, settings.http_port)
    health = Health("postgres", "redis", "mqtt")
    # Neither connects yet: a start while PostgreSQL or Redis is down waits, not ready.
    pool = await db.create_pool(common.database_url.get_secret_value(), max_size=pool_size,
                                application_name=f"insa-{service}", session_state=session_state)
    redis_conn = create_redis(common.redis_url.get_secret_value())
    try:
        yield Worker(health, pool, redis_conn, Lifecycle(settings.drain_seconds, health), http,
                     probe_interval)
    finally:
        await redis_conn.aclose()
        await pool.close()


YOUNG_THRESHOLD = 10_000


def tune_gc_for_throughput() -> None:
    """For a service that allocates per message, once it has started: what start-up made
    (modules, settings, pools) lives as long as the process, so it is frozen out of the
    collector's scans; and the youngest generation is collected every YOUNG_THRESHOLD
    allocations instead of 700, the older ones less often. Parsing and mapping a reading
    took about 40 % less CPU so (docs/benchmarks.md, "Ingest speed"). Most of what a
    message makes is freed by reference counting; only cycles wait for a collection."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 50, 50)
