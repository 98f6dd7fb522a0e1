"""Dependency outages of any length never kill the ingestor, and lose or duplicate nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from devtools.stack.servers import (
    RunningBroker,
    RunningPostgres,
    RunningRedis,
    remove_tree,
    start_postgres,
)
from devtools.stack.service_process import ServiceProcess
from shared.migrate import migrate
from tests.utils.db import count_seqs, stored_seqs
from tests.utils.devices import LOAD_GENERATOR, connect_device, publish_at_rate
from tests.utils.readings import assert_exactly_once, readings
from tests.utils.streams import all_streamed
from tests.utils.waiting import wait_until


async def _ready(ingestor: ServiceProcess) -> int | httpx.Response:
    """The readiness response, or the exit code when the process is gone."""
    assert ingestor.proc is not None
    if ingestor.proc.poll() is not None:
        return ingestor.proc.returncode
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            return await client.get(f"http://127.0.0.1:{ingestor.http_port}/health/ready")
        except httpx.ConnectError:
            return -1  # not serving yet


def _status(code: int) -> Callable[[int | httpx.Response], bool]:
    def done(ready: int | httpx.Response) -> bool:
        if isinstance(ready, int) and ready >= 0:
            raise AssertionError(f"the ingestor exited with code {ready}")
        return isinstance(ready, httpx.Response) and ready.status_code == code
    return done


def assert_alive(ingestor: ServiceProcess) -> None:
    assert ingestor.proc is not None
    assert ingestor.proc.poll() is None, f"ingestor exited:\n{ingestor.log()}"


async def test_starting_with_postgres_and_redis_down_waits_instead_of_exiting(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        postgres_server: RunningPostgres, redis_server: RunningRedis, db_url: str) -> None:
    count = 200
    device = connect_device(broker, "esp-cold-start")
    # A first run made the persistent session and its subscriptions, as in production.
    ingestor_factory().stop(signal.SIGTERM)
    postgres_server.stop()
    redis_server.stop()
    try:
        ingestor = ingestor_factory(wait_ready=False,
                                    INSA_INGESTOR_RETRY_MAX_DELAY_SECONDS="0.5")
        device.publish_many(readings(device.client_id, count))
        ready = await wait_until(lambda: _ready(ingestor), _status(503),
                                 what="readiness 503 while dependencies are down")
        assert isinstance(ready, httpx.Response)
        assert {"postgres", "redis"} <= set(ready.json()["failing"])
        await asyncio.sleep(3)  # long enough for the old code to have exited on its own
        assert_alive(ingestor)
    finally:
        postgres_server.start()
        redis_server.start()
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=60,
                     what="every reading stored once the dependencies are back")
    assert_exactly_once(await stored_seqs(db_url), count)
    await all_streamed(redis_server.url, count)
    await wait_until(lambda: _ready(ingestor), _status(200), what="readiness after recovery")
    assert_alive(ingestor)
    device.close()


@pytest.fixture
def durable_postgres() -> Iterator[RunningPostgres]:
    """Its own server with fsync and synchronous commit on, as in production: the shared
    test server trades both for speed, and a crash would then lose committed rows."""
    server = start_postgres(durable=True)
    yield server
    server.stop()
    remove_tree(server.spec.datadir.parent)


@pytest.mark.chaos
@pytest.mark.timeout(360)
@pytest.mark.parametrize(("shutdown", "outage"), [(signal.SIGINT, 90.0), (signal.SIGQUIT, 30.0)],
                         ids=["fast-shutdown-90s", "crash-30s"])
async def test_a_database_outage_at_500_per_second_loses_nothing(
        shutdown: signal.Signals, outage: float,
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        durable_postgres: RunningPostgres) -> None:
    """PostgreSQL goes away mid-COPY (fast shutdown, or a crash) under steady load."""
    postgres_server, db_url = durable_postgres, durable_postgres.spec.dsn()
    await migrate(db_url)
    rate, before = 500, 4.0
    count = int(rate * (before + outage + 6))
    ingestor = ingestor_factory(INSA_DATABASE_URL=db_url,
                                INSA_INGESTOR_RETRY_MAX_DELAY_SECONDS="2", **LOAD_GENERATOR)
    device = connect_device(broker, f"esp-outage-{shutdown.name.lower()}")
    publisher = publish_at_rate(device, readings(device.client_id, count), rate)
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= rate * before / 2,
                     what="ingest under way")
    postgres_server.stop(shutdown)
    try:
        deadline = time.monotonic() + outage
        while time.monotonic() < deadline:
            assert_alive(ingestor)
            await asyncio.sleep(1)
    finally:
        postgres_server.start()
    publisher.join(120)
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=120,
                     what="every reading stored after the outage")
    assert_exactly_once(await stored_seqs(db_url), count)
    assert_alive(ingestor)
    device.close()
