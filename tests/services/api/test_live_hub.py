"""The live feed's hub on its own, over a real Redis: slow clients cut off with a resume
cursor, gaps after long absences, malformed entries, heartbeats, resumes during writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from devtools.stack.servers import RunningRedis
from services.api.live import LiveHub
from services.api.live_entries import decode_cursor
from shared.streams import (
    ALERTS,
    TELEMETRY,
    TelemetryWriter,
    encode_telemetry,
)
from tests.utils.live import (
    TS_MS,
    add_alert,
    position,
    xadd,
)
from tests.utils.tasks import until_stopped


# --- the hub on its own: slow clients, gaps, heartbeats, concurrent resumes ---------------
@contextlib.asynccontextmanager
async def running(hub: LiveHub) -> AsyncIterator[LiveHub]:
    async with until_stopped(hub.run):
        yield hub


async def test_a_slow_client_is_cut_off_with_a_resume_cursor(streams: redis.Redis) -> None:
    async with running(LiveHub(streams, queue_size=4)) as hub, \
            hub.follow({"alerts"}, None, {}) as slow, hub.follow({"alerts"}, None, {}) as fast, \
            contextlib.AsyncExitStack() as stack:
        slow_events = await stack.enter_async_context(contextlib.aclosing(slow.events()))
        fast_events = await stack.enter_async_context(contextlib.aclosing(fast.events()))
        start = (await anext(slow_events))[1]
        await anext(fast_events)
        entries = []
        for _ in range(10):  # the fast client keeps up; the slow one reads nothing
            entries.append((await add_alert(streams, "W-1"))[0])
            name, cursor, _ = await asyncio.wait_for(anext(fast_events), 10)
            assert name == "alert" and position(cursor, "a") == entries[-1]
        assert hub.readers["alerts"].subscribers == 1  # the slow one is already detached
        name, cursor, data = await anext(slow_events)
        assert name == "resume" and cursor == start
        assert "slow consumer" in orjson.loads(data)["reason"]
    async with running(LiveHub(streams)) as hub, \
            hub.follow({"alerts"}, None, decode_cursor(cursor)) as again:
        async with contextlib.aclosing(again.events()) as events:
            await anext(events)
            resumed = [await anext(events) for _ in range(10)]
    assert [position(c, "a") for _, c, _ in resumed] == entries


async def test_a_long_absence_resumes_with_a_gap(streams: redis.Redis) -> None:
    entries = [(await add_alert(streams, "W-1"))[0] for _ in range(5)]
    async with running(LiveHub(streams, backlog_max=3)) as hub, \
            hub.follow({"alerts"}, None, {"alerts": (0, 0)}) as feed:
        async with contextlib.aclosing(feed.events()) as events:
            await anext(events)
            name, cursor, data = await anext(events)
            assert name == "gap" and position(cursor, "a") == entries[1]
            assert orjson.loads(data)["through"] == entries[1]
            rest = [position((await anext(events))[1], "a") for _ in range(3)]
    assert rest == entries[2:]


async def test_malformed_entries_are_skipped(streams: redis.Redis) -> None:
    await xadd(streams, ALERTS, {"alert": b"not json"})
    _, alert = await add_alert(streams, "W-1")
    async with running(LiveHub(streams)) as hub, \
            hub.follow({"alerts"}, None, {"alerts": (0, 0)}) as feed, \
            contextlib.aclosing(feed.events()) as events:
        await anext(events)
        name, _, data = await asyncio.wait_for(anext(events), 5)  # from the backlog
        assert (name, orjson.loads(data)) == ("alert", alert)
        await xadd(streams, ALERTS, {"alert": b"[1]"})
        await xadd(streams, ALERTS, {"other": b"1"})
        entry, later = await add_alert(streams, "W-2")
        name, cursor, data = await asyncio.wait_for(anext(events), 5)  # live
        assert orjson.loads(data) == later and position(cursor, "a") == entry


async def test_heartbeats_move_a_quiet_clients_cursor(streams: redis.Redis) -> None:
    async with running(LiveHub(streams, heartbeat_seconds=0.2)) as hub, \
            hub.follow({"telemetry"}, frozenset({"W-1"}), {}) as feed:
        async with contextlib.aclosing(feed.events()) as events:
            await anext(events)
            await TelemetryWriter(streams).add(
                [encode_telemetry("W-2", TS_MS, {"pip": float(i)}, None) for i in range(3)])
            newest: Any = await streams.xrevrange(TELEMETRY, count=1)
            name, cursor, _ = await asyncio.wait_for(anext(events), 5)
            while position(cursor, "t") != newest[0][0].decode():
                name, cursor, _ = await asyncio.wait_for(anext(events), 5)
        assert name == "heartbeat"


async def test_resumes_during_writes_have_no_gap_and_no_duplicate(
        streams: redis.Redis) -> None:
    """A client reconnects over and over while alerts keep coming: together its sessions
    see every entry exactly once, in order."""
    total = 300
    async with running(LiveHub(streams, queue_size=1000)) as hub:
        async def write() -> list[str]:
            written = []
            for _ in range(total):
                written.append((await add_alert(streams, "W-1"))[0])
                await asyncio.sleep(0.001)
            return written

        writer = asyncio.create_task(write())
        seen: list[str] = []
        cursor: dict[str, tuple[int, int]] = {"alerts": (0, 0)}
        while len(seen) < total:
            async with hub.follow({"alerts"}, None, cursor) as feed, \
                    contextlib.aclosing(feed.events()) as events:
                await anext(events)
                for _ in range(7):  # a few events per session, then reconnect
                    if len(seen) == total:
                        break
                    _, text, _ = await asyncio.wait_for(anext(events), 10)
                    seen.append(position(text, "a"))
                    cursor = decode_cursor(text)
        assert seen == await writer


def test_a_cursor_redis_cannot_read_is_refused() -> None:
    assert decode_cursor("a=1732500000000-0") == {"alerts": (1732500000000, 0)}
    with pytest.raises(ValueError, match="bad cursor part"):
        decode_cursor(f"a={2**64}-0")


async def test_the_feed_carries_on_after_a_redis_outage(streams: redis.Redis,
                                                        redis_server: RunningRedis) -> None:
    async def next_alert(events: AsyncIterator[tuple[str, str, bytes]]) -> str:
        while True:
            name, cursor, _ = await asyncio.wait_for(anext(events), 20)
            if name == "alert":
                return position(cursor, "a")

    async with running(LiveHub(streams, heartbeat_seconds=0.5)) as hub, \
            hub.follow({"alerts"}, None, {}) as feed:
        async with contextlib.aclosing(feed.events()) as events:
            await anext(events)
            first = (await add_alert(streams, "W-1"))[0]
            assert await next_alert(events) == first
            redis_server.stop()
            await asyncio.sleep(1.5)  # the reader fails and backs off meanwhile
            redis_server.start()  # returns once it listens
            after = (await add_alert(streams, "W-1"))[0]
            assert await next_alert(events) == after
