"""SIGTERM drains: what was received is committed and acked before the process exits."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx

from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess
from tests.utils.db import count_seqs
from tests.utils.devices import LOAD_GENERATOR, connect_device, publish_in_background
from tests.utils.readings import readings
from tests.utils.waiting import wait_until


async def test_sigterm_flushes_and_acks_before_exiting(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    # A batch that would not close for a minute: only the drain can flush it.
    first = ingestor_factory(INSA_INGESTOR_BATCH_MAX_AGE_MS="60000")
    device = connect_device(broker, "esp-drain")
    items = readings("esp-drain", 501)
    device.publish_many(items[:500])
    await wait_until(lambda: _metric(first, "insa_ingestor_pending_messages"),
                     lambda n: n == 500, what="500 messages held")
    assert await count_seqs(db_url) == 0
    assert first.stop(signal.SIGTERM) == 0
    assert await count_seqs(db_url) == 500
    assert '"ingestor stopped"' in first.log()

    second = ingestor_factory()
    device.publish(*items[500])
    await wait_until(lambda: count_seqs(db_url), lambda n: n == 501)
    assert second.metric("insa_ingestor_redeliveries_total") == 0  # everything was acked
    device.close()


async def test_readiness_names_the_failing_dependency(
        ingestor: ServiceProcess, broker: RunningBroker, redis_server: RunningRedis,
        db_url: str) -> None:
    base = f"http://127.0.0.1:{ingestor.http_port}"
    assert (await _get(f"{base}/health/ready")).json() == {"status": "ok"}
    redis_server.stop()
    device = connect_device(broker, "esp-ready")
    device.publish(*readings("esp-ready", 1)[0])
    ready = await wait_until(lambda: _get(f"{base}/health/ready"),
                             lambda r: r.status_code == 503, what="readiness to fail")
    assert "redis" in ready.json()["failing"]
    assert (await _get(f"{base}/health/live")).status_code == 200  # alive: no restart needed
    redis_server.start()
    await wait_until(lambda: _get(f"{base}/health/ready"), lambda r: r.status_code == 200,
                     what="readiness to recover")
    device.close()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


async def _metric(proc: ServiceProcess, name: str) -> float:
    return proc.metric(name)


async def test_sigterm_under_load_drains_cleanly_and_leaves_the_backlog(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    count = 20000
    ingestor = ingestor_factory(INSA_INGESTOR_DRAIN_SECONDS="60",
                                INSA_INGESTOR_RECEIVE_MAXIMUM="100",
                                INSA_INGESTOR_BATCH_MAX_MESSAGES="50", **LOAD_GENERATOR)
    device = connect_device(broker, "esp-busy")
    publisher = publish_in_background(device, readings("esp-busy", count))
    await wait_until(lambda: count_seqs(db_url), lambda n: n > 0, what="ingest under way")
    assert ingestor.stop(signal.SIGTERM) == 0
    stored = await count_seqs(db_url)
    # The drain committed what was held and left the broker's backlog for the next one.
    assert stored < count
    assert "drain deadline passed" not in ingestor.log()
    publisher.join(60)
    second = ingestor_factory(**LOAD_GENERATOR)
    await wait_until(lambda: count_seqs(db_url), lambda n: n == count, timeout=60)
    # Whatever the first one stored, it had acked: nothing of it came back.
    assert second.metric("insa_ingestor_duplicate_rows_total") == 0
    device.close()
