"""Stream trimming never drops what a consumer group still needs, short of the hard cap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from devtools.stack.servers import RunningRedis
from shared.streams import trim_consumed
from tests.utils.streams import range_entries, read_entries

KEY = "insa:telemetry"


@pytest.fixture
async def client(redis_server: RunningRedis) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    # Small stream nodes, so approximate trimming acts on a small test stream.
    await client.config_set("stream-node-max-entries", 10)
    yield client
    await client.aclose()


async def add(client: redis.Redis, count: int) -> list[bytes | str]:
    return [await client.xadd(KEY, {"n": i}) for i in range(count)]


async def test_nothing_to_trim_without_a_stream(client: redis.Redis) -> None:
    trimmed = await trim_consumed(client, KEY, max_len=1000)
    assert (trimmed.entries, trimmed.unread) == (0, 0)


async def test_keeps_everything_from_the_oldest_pending_entry(client: redis.Redis) -> None:
    ids = await add(client, 100)
    await client.xgroup_create(KEY, "diagnostics", id="0")
    read = await client.xreadgroup("diagnostics", "c1", {KEY: ">"}, count=40)
    delivered = [entry_id for entry_id, _ in read_entries(read)[0][1]]
    await client.xack(KEY, "diagnostics", *delivered[:30])  # 30..39 stay pending
    trimmed = await trim_consumed(client, KEY, max_len=1000)
    remaining = [entry_id for entry_id, _ in range_entries(await client.xrange(KEY))]
    assert 20 <= trimmed.entries <= 30 and trimmed.unread == 0
    assert remaining[-70:] == ids[30:]  # every pending and unread entry is still there


async def test_a_group_that_has_read_nothing_holds_everything(client: redis.Redis) -> None:
    await add(client, 100)
    await client.xgroup_create(KEY, "diagnostics", id="$")
    await client.xgroup_create(KEY, "alerts", id="0")  # has not started reading
    await client.xreadgroup("diagnostics", "c1", {KEY: ">"})
    trimmed = await trim_consumed(client, KEY, max_len=1000)
    assert trimmed.entries == 0 and await client.xlen(KEY) == 100


async def test_past_the_cap_unread_entries_go_and_are_counted(client: redis.Redis) -> None:
    await client.xgroup_create(KEY, "alerts", id="$", mkstream=True)  # a stuck consumer
    await add(client, 1500)
    trimmed = await trim_consumed(client, KEY, max_len=1000)
    assert (trimmed.entries, trimmed.unread) == (500, 500)
    assert await client.xlen(KEY) == 1000


async def test_without_groups_the_cap_is_plain_retention(client: redis.Redis) -> None:
    await add(client, 1500)
    trimmed = await trim_consumed(client, KEY, max_len=1000)
    assert (trimmed.entries, trimmed.unread) == (500, 0)


async def test_entries_acked_between_the_group_summary_and_the_pending_query(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live race: XINFO GROUPS counts pending entries, the consumer acks them all,
    and XPENDING then has no minimum. Trimming goes on (it crashed the ingestor)."""
    ids = await add(client, 100)
    await client.xgroup_create(KEY, "diagnostics", id="0")
    read = await client.xreadgroup("diagnostics", "c1", {KEY: ">"}, count=60)
    delivered = [entry_id for entry_id, _ in read_entries(read)[0][1]]
    pending_summary = client.xpending

    async def acked_just_before(name: str, groupname: str) -> object:
        await client.xack(KEY, "diagnostics", *delivered)
        return await pending_summary(name, groupname)

    monkeypatch.setattr(client, "xpending", acked_just_before)
    trimmed = await trim_consumed(client, KEY, max_len=1000)
    remaining = [entry_id for entry_id, _ in range_entries(await client.xrange(KEY))]
    assert trimmed.unread == 0 and 50 <= trimmed.entries <= 60
    assert remaining[-40:] == ids[60:]  # the entries nobody read are all still there
