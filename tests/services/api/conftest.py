"""Fixtures of the live-feed tests (test_live.py, test_live_hub.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from devtools.stack.servers import RunningRedis


@pytest.fixture
async def streams(redis_server: RunningRedis) -> AsyncIterator[redis.Redis]:
    """A client of the test's Redis, where the feed's streams are written."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
