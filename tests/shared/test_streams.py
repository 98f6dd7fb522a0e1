"""The stream consumer against a real Redis: ack after the handler, retries, dead letters,
reclaiming from a killed consumer, replicas sharing a group; the telemetry entry format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as redis
from prometheus_client import CollectorRegistry

from devtools.stack.servers import RunningRedis
from shared import streams
from shared.streams import (
    DEAD,
    ConsumerSettings,
    StreamConsumer,
    StreamMessage,
    StreamMetrics,
    TelemetryWriter,
    decode_telemetry,
    encode_telemetry,
    group_backlog,
)
from tests.utils.streams import range_entries

STREAM, GROUP = "insa:test", "testers"
FAST = ConsumerSettings(batch=10, block_ms=50, claim_idle_ms=300, claim_every_seconds=0.1,
                        max_deliveries=3, retry_pending_seconds=0.05)


@pytest.fixture
async def client(redis_server: RunningRedis) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def add(client: redis.Redis, count: int) -> None:
    for n in range(count):
        await client.xadd(STREAM, {"n": n})


def numbers(messages: list[StreamMessage]) -> list[int]:
    return [int(m.fields[b"n"]) for m in messages]


async def consume_until(consumer: StreamConsumer, handler: object, done: object,
                        timeout: float = 10) -> None:
    """Run the consumer until `done()` holds (then stop it, as SIGTERM would)."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(handler, stop))  # type: ignore[arg-type]
    async with asyncio.timeout(timeout):
        while not done():  # type: ignore[operator]
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)


async def pending(client: redis.Redis) -> int:
    return int((await client.xpending(STREAM, GROUP))["pending"])


def counted(registry: CollectorRegistry, name: str) -> float | None:
    """A consumer counter's value for this test's stream and group, as /metrics has it."""
    return registry.get_sample_value(f"insa_stream_{name}_total",
                                     {"stream": STREAM, "group": GROUP})


async def test_every_entry_is_handled_once_and_acked_after_the_handler(
        client: redis.Redis) -> None:
    await add(client, 25)
    seen: list[int] = []
    acked_before_return: list[int] = []

    async def handler(messages: list[StreamMessage]) -> None:
        acked_before_return.append(await pending(client))
        seen.extend(numbers(messages))

    consumer = StreamConsumer(client, STREAM, GROUP, "c1", FAST)
    await consume_until(consumer, handler, lambda: len(seen) >= 25)
    assert seen == list(range(25))
    assert all(n > 0 for n in acked_before_return)  # the batch was still pending in it
    assert await pending(client) == 0
    assert await consumer.lag() == (0, 0)


async def test_a_bad_entry_is_retried_then_dead_lettered_and_the_rest_go_on(
        client: redis.Redis) -> None:
    await add(client, 10)
    seen: list[int] = []

    async def handler(messages: list[StreamMessage]) -> None:
        if 4 in numbers(messages):
            raise ValueError("cannot handle 4")
        seen.extend(numbers(messages))

    registry = CollectorRegistry()
    consumer = StreamConsumer(client, STREAM, GROUP, "c1", FAST,
                              metrics=StreamMetrics(registry))
    await consume_until(consumer, handler, lambda: consumer.stats.dead_lettered == 1)
    assert sorted(seen) == [n for n in range(10) if n != 4]
    # Each delivery of 4 failed: the first max_deliveries - 1 left it pending, the last
    # dead-lettered it; the Prometheus counters say the same as the stats.
    assert consumer.stats.retried == FAST.max_deliveries - 1
    assert counted(registry, "retries") == FAST.max_deliveries - 1
    assert counted(registry, "dead_letters") == 1
    assert await pending(client) == 0
    [(_, dead)] = range_entries(await client.xrange(DEAD))
    assert dead[b"stream"] == STREAM.encode() and dead[b"group"] == GROUP.encode()
    assert orjson.loads(dead[b"fields"]) == {"n": "4"}
    assert dead[b"error"] == b"ValueError: cannot handle 4"
    assert int(dead[b"deliveries"]) == FAST.max_deliveries


async def test_a_transient_failure_retries_the_batch_without_dead_letters(
        client: redis.Redis) -> None:
    await add(client, 5)
    seen: list[int] = []
    failures = 2

    async def handler(messages: list[StreamMessage]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("database down")
        seen.extend(numbers(messages))

    registry = CollectorRegistry()
    consumer = StreamConsumer(client, STREAM, GROUP, "c1", FAST,
                              metrics=StreamMetrics(registry))
    await consume_until(consumer, handler, lambda: len(seen) >= 5)
    assert seen == list(range(5))
    assert consumer.stats.dead_lettered == 0 and await client.xlen(DEAD) == 0
    # The batch waited for the dependency: no entry was retried on its own or dead.
    assert counted(registry, "retries") == 0 and counted(registry, "dead_letters") == 0


async def test_entries_of_a_killed_consumer_are_claimed_by_another(
        client: redis.Redis) -> None:
    await add(client, 8)
    got_batch = asyncio.Event()

    async def hangs(messages: list[StreamMessage]) -> None:
        got_batch.set()
        await asyncio.sleep(3600)  # killed before it can commit or ack

    doomed = StreamConsumer(client, STREAM, GROUP, "doomed", FAST)
    task = asyncio.create_task(doomed.run(hangs, asyncio.Event()))
    await asyncio.wait_for(got_batch.wait(), 5)
    task.cancel()
    assert await pending(client) == 8

    seen: list[int] = []

    async def handler(messages: list[StreamMessage]) -> None:
        seen.extend(numbers(messages))

    survivor = StreamConsumer(client, STREAM, GROUP, "survivor", FAST)
    await consume_until(survivor, handler, lambda: len(seen) >= 8)
    assert sorted(seen) == list(range(8))
    assert survivor.stats.claimed == 8
    assert await pending(client) == 0


async def test_a_restarted_consumer_finishes_its_own_pending_entries_first(
        client: redis.Redis) -> None:
    await add(client, 3)
    # Its previous life read the entries and died before acking them.
    await client.xgroup_create(STREAM, GROUP, id="0")
    await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=3)
    seen: list[int] = []

    async def handler(messages: list[StreamMessage]) -> None:
        seen.extend(numbers(messages))

    settings = ConsumerSettings(block_ms=50, claim_idle_ms=3_600_000)  # no claiming
    consumer = StreamConsumer(client, STREAM, GROUP, "c1", settings)
    await consume_until(consumer, handler, lambda: len(seen) >= 3)
    assert seen == [0, 1, 2]
    assert await pending(client) == 0


async def test_replicas_share_a_group_and_each_entry_goes_to_one(client: redis.Redis) -> None:
    await add(client, 200)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def handler_of(name: str) -> object:
        async def handler(messages: list[StreamMessage]) -> None:
            seen[name].extend(numbers(messages))
            await asyncio.sleep(0.01)  # let the other replica take a turn
        return handler

    stop = asyncio.Event()
    tasks = [asyncio.create_task(StreamConsumer(client, STREAM, GROUP, n, FAST).run(
        handler_of(n), stop)) for n in seen]  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while len(seen["a"]) + len(seen["b"]) < 200:
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*tasks)
    assert sorted(seen["a"] + seen["b"]) == list(range(200))
    assert seen["a"] and seen["b"]


async def test_telemetry_entries_round_trip_through_the_writer(client: redis.Redis) -> None:
    writer = TelemetryWriter(client, STREAM)
    # A text with a newline and other control characters: the batch's fields are
    # newline-separated, which the metrics JSON's escaping keeps unambiguous.
    metrics: dict[str, float | str] = {"pip": 850.5, "mode": "auto\nmanual\r\t\x00 é", "": ""}
    entries = [encode_telemetry("esp-1", 1_763_800_000_000 + n, metrics, n if n else None)
               for n in range(2500)]  # more than one script call
    await writer.add(entries)
    decoded = [decode_telemetry(f) for _, f in range_entries(await client.xrange(STREAM))]
    assert [(d.device_id, d.ts_ms, d.metrics, d.seq) for d in decoded] == [
        ("esp-1", 1_763_800_000_000 + n, metrics, n if n else None) for n in range(2500)]


def test_a_malformed_telemetry_entry_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_telemetry({b"device_id": b"x", b"ts": b"1", b"metrics": b"[1]"})
    with pytest.raises(ValueError):
        decode_telemetry({b"device_id": b"x", b"ts": b"soon", b"metrics": b"{}"})


async def test_backlog_is_what_a_group_has_not_read_even_when_redis_miscounts(
        client: redis.Redis) -> None:
    await add(client, 10)
    consumer = StreamConsumer(client, STREAM, GROUP, "c1", FAST)
    await consumer.ensure_group()
    await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=4)
    assert await consumer.lag() == (6, 4)  # 6 unread, 4 read and not acknowledged
    assert await group_backlog(client, STREAM) == {GROUP: (6, 4)}
    # Everything delivered, but Redis's read counter behind (as after a restart): its
    # `lag` says 9, the group has nothing left to read.
    await client.xreadgroup(GROUP, "c1", {STREAM: ">"})
    await client.xgroup_setid(STREAM, GROUP, "$", entries_read=1)
    [info] = await client.xinfo_groups(STREAM)
    assert info["lag"] == 9
    assert await consumer.lag() == (0, 10)
    assert await group_backlog(client, "insa:none") == {}


async def test_a_batch_over_the_byte_budget_goes_in_several_calls(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "BYTES_PER_CALL", 1000)
    calls: list[int] = []
    writer = TelemetryWriter(client, STREAM)
    script = writer._xadd_many

    async def counting(*, keys: list[str], args: list[bytes]) -> object:
        calls.append(len(args[0]))
        return await script(keys=keys, args=args)

    writer._xadd_many = counting  # type: ignore[assignment]
    entries = [encode_telemetry("esp-1", 1_763_800_000_000 + n, {"text": "x" * 300}, n)
               for n in range(10)]
    await writer.add(entries)
    assert len(calls) > 1 and max(calls) <= 1000
    decoded = [decode_telemetry(f) for _, f in range_entries(await client.xrange(STREAM))]
    assert [d.seq for d in decoded] == list(range(10))
