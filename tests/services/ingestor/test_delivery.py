"""Delivery guarantees: kill -9 and PostgreSQL or Redis outages mid-stream lose nothing."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import asyncpg
import pytest
import redis

from devtools.stack.servers import RunningBroker, RunningPostgres, RunningRedis
from devtools.stack.service_process import ServiceProcess, replica_overrides
from tests.utils.db import count_seqs, execute, fetchval, stored_seqs
from tests.utils.devices import connect_device, publish_in_background
from tests.utils.readings import assert_exactly_once, readings
from tests.utils.streams import all_streamed, stream_seqs
from tests.utils.waiting import wait_until

T = TypeVar("T")


async def test_kill_9_mid_stream_loses_and_duplicates_nothing(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        redis_server: RunningRedis, db_url: str) -> None:
    count, first_part = 3250, 1250
    # Batches of 500 that only close when full: after 1,250 messages, 1,000 are committed
    # and acked and 250 are received but unacked when the process is killed.
    first = ingestor_factory(INSA_INGESTOR_BATCH_MAX_MESSAGES="500",
                             INSA_INGESTOR_BATCH_MAX_AGE_MS="60000")
    device = connect_device(broker, "esp-crash")
    items = readings("esp-crash", count)
    device.publish_many(items[:first_part])
    await wait_until(lambda: count_seqs(db_url), lambda n: n == 1000, what="two batches")
    await wait_until(lambda: _async(lambda _: first.metric("insa_ingestor_pending_messages"),
                                    ""), lambda n: n == 250, what="250 held unacked")
    first.stop(signal.SIGKILL)
    device.publish_many(items[first_part:])  # the stream goes on; the broker queues it

    second = ingestor_factory()
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=60,
                     what="every reading stored")
    assert_exactly_once(await stored_seqs(db_url), count)
    # The broker really redelivered what the killed process had received but not acked.
    assert second.metric("insa_ingestor_redeliveries_total") >= 250
    await all_streamed(redis_server.url, count)
    device.close()


@pytest.mark.parametrize("dependency", ["postgres", "redis"])
async def test_an_outage_mid_stream_holds_acks_and_recovers(
        dependency: str, ingestor_factory: Callable[..., ServiceProcess],
        broker: RunningBroker, postgres_server: RunningPostgres, redis_server: RunningRedis,
        db_url: str) -> None:
    count, window = 2000, 200
    server = postgres_server if dependency == "postgres" else redis_server
    label = f'dependency="{dependency}"'
    ingestor = ingestor_factory(INSA_INGESTOR_RECEIVE_MAXIMUM=str(window),
                                INSA_INGESTOR_BATCH_MAX_MESSAGES="50",
                                INSA_INGESTOR_RETRY_MAX_DELAY_SECONDS="0.5")
    device = connect_device(broker, f"esp-{dependency}-down")
    items = readings(device.client_id, count)
    device.publish_many(items[:window])
    await wait_until(lambda: count_seqs(db_url), lambda n: n == window)
    server.stop()
    try:
        publisher = publish_in_background(device, items[window:])
        await wait_until(lambda: _async(ingestor.metric, "insa_ingestor_pending_messages"),
                         lambda n: n == window, what="the receive window to fill")
        # Backpressure: no more than the window is held; the broker keeps the rest.
        assert ingestor.metric("insa_ingestor_backpressure", label) == 1
        publisher.join(60)
        assert ingestor.metric("insa_ingestor_pending_messages_high_water") == window
    finally:
        server.start()
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=60,
                     what="recovery after the outage")
    assert_exactly_once(await stored_seqs(db_url), count)
    await wait_until(lambda: _async(stream_seqs, redis_server.url),
                     lambda s: s == set(range(count)), what="every reading in the stream")
    assert ingestor.proc is not None and ingestor.proc.poll() is None  # recovered, no restart
    assert ingestor.metric("insa_ingestor_backpressure", label) == 0
    device.close()


async def _async(fn: Callable[[str], T], arg: str) -> T:
    return fn(arg)


async def test_intake_stays_within_the_receive_window_under_load(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    """Memory is bounded by the window even though this broker releases more per PUBACK."""
    count = 3000
    ingestor = ingestor_factory(INSA_INGESTOR_RECEIVE_MAXIMUM="100",
                                INSA_INGESTOR_BATCH_MAX_MESSAGES="20")
    device = connect_device(broker, "esp-window")
    device.publish_many(readings("esp-window", count))
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=60)
    assert_exactly_once(await stored_seqs(db_url), count)
    assert 0 < ingestor.metric("insa_ingestor_pending_messages_high_water") <= 100
    device.close()


async def test_a_crash_between_commit_and_stream_does_not_lose_the_stream_entry(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        redis_server: RunningRedis, db_url: str) -> None:
    """Rows committed while Redis is down, then kill -9: the redelivery re-streams them."""
    count = 300
    first = ingestor_factory(INSA_INGESTOR_RETRY_MAX_DELAY_SECONDS="0.5")
    device = connect_device(broker, "esp-commit-crash")
    redis_server.stop()
    device.publish_many(readings("esp-commit-crash", count))
    await wait_until(lambda: count_seqs(db_url), lambda n: n == count,
                     what="rows committed while the stream is unreachable")
    first.stop(signal.SIGKILL)  # committed, never streamed, never acked
    redis_server.start()
    second = ingestor_factory()
    await wait_until(lambda: _async(stream_seqs, redis_server.url),
                     lambda s: s == set(range(count)), what="every reading re-streamed")
    assert second.metric("insa_ingestor_duplicate_rows_total") == count * 2  # n + flow_rate
    assert_exactly_once(await stored_seqs(db_url), count)
    device.close()


async def test_partitioned_replicas_store_everything_once(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    count = 2000
    names = [f"esp-shared-{n}" for n in range(4)]
    # Registered first: partitioned replicas subscribe to registered devices only.
    await execute(db_url, "INSERT INTO devices (device_id) SELECT unnest($1::text[])", names)
    replicas = [ingestor_factory(**replica_overrides(broker, n, 2)) for n in (0, 1)]
    devices = [connect_device(broker, name) for name in names]
    threads = [publish_in_background(d, readings(d.client_id, count // 4)) for d in devices]
    for thread in threads:
        thread.join(60)
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=60)
    seqs = Counter(await stored_seqs(db_url))
    assert seqs == dict.fromkeys(range(count // 4), 4)  # every device's every seq, once
    # Each replica was sent, and stored, its own devices' readings only.
    assert all(r.metric("insa_ingestor_messages_total") > 0 for r in replicas)
    assert sum(r.metric("insa_ingestor_messages_total") for r in replicas) == count
    assert sum(r.metric("insa_ingestor_other_partition_total") for r in replicas) == 0
    for d in devices:
        d.close()


async def test_a_transient_database_error_is_retried_not_rejected(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    """A lock timeout is the database's trouble, not the data's: nothing may be rejected."""
    count = 20
    ingestor = ingestor_factory(INSA_DATABASE_URL=f"{db_url}?lock_timeout=300",
                                INSA_INGESTOR_RETRY_MAX_DELAY_SECONDS="0.5")
    device = connect_device(broker, "esp-locked")
    blocker = await asyncpg.connect(db_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE telemetry_latest IN ACCESS EXCLUSIVE MODE")
            for topic, payload in readings(device.client_id, count):
                device.publish(topic, payload)  # one by one: batches of a single message too
            await wait_until(lambda: _async(ingestor.metric, "insa_ingestor_backpressure"),
                             lambda n: n == 1, what="backpressure while locked")
    finally:
        await blocker.close()
    await wait_until(lambda: count_seqs(db_url), lambda n: n == count, timeout=30)
    assert await fetchval(db_url, "SELECT count(*) FROM rejected_messages") == 0
    assert ingestor.proc is not None and ingestor.proc.poll() is None
    device.close()


async def test_redis_refusing_writes_is_backpressure_not_a_crash(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        redis_server: RunningRedis, db_url: str) -> None:
    ingestor = ingestor_factory(INSA_INGESTOR_RETRY_MAX_DELAY_SECONDS="0.5")
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("maxmemory", 1)  # every write now fails with OOM
    device = connect_device(broker, "esp-oom")
    device.publish_many(readings(device.client_id, 10))
    await wait_until(lambda: _async(ingestor.metric, "insa_ingestor_backpressure"),
                     lambda n: n == 1, what="backpressure on OOM")
    client.config_set("maxmemory", 0)
    await wait_until(lambda: _async(stream_seqs, redis_server.url),
                     lambda s: s == set(range(10)), what="stream after OOM")
    assert ingestor.proc is not None and ingestor.proc.poll() is None
    device.close()
