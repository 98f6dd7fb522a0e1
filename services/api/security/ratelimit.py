"""Brute-force limits (the `limits` library, moving window, counters in Redis so every
API replica shares them). Only failures are counted: a user who types the password right
is never slowed, an attacker trying passwords or keys is, and gets 429 with Retry-After."""

from __future__ import annotations

import math
import time
from typing import NoReturn

import redis.asyncio as redis
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from shared.errors import TooManyRequests


class FailureLimiter:
    """`check` + `failed` count failures only (API keys: random 256-bit secrets, so this
    is defence in depth and busy machines are never slowed); `attempt` counts every try
    before it is judged, so concurrent guesses cannot all pass one check (logins)."""

    def __init__(self, redis_conn: redis.Redis) -> None:
        # On the API's own connection pool (closed with it); the URI is then only a label.
        self._storage = RedisStorage("async+redis://", implementation="redispy",
                                     key_prefix="insa:limits",
                                     connection_pool=redis_conn.connection_pool)  # type: ignore[arg-type]  # passed through
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def check(self, per_minute: int, *key: str) -> None:
        """Refuse (429) while `key` has used up its failures."""
        item = RateLimitItemPerMinute(per_minute)
        if not await self._limiter.test(item, *key):
            await self._refuse(item, key, "too many failed attempts")

    async def failed(self, per_minute: int, *key: str) -> None:
        await self._limiter.hit(RateLimitItemPerMinute(per_minute), *key)

    async def attempt(self, per_minute: int, *key: str) -> None:
        """Count this try now (atomically in Redis); 429 if it is one too many."""
        item = RateLimitItemPerMinute(per_minute)
        if not await self._limiter.hit(item, *key):
            await self._refuse(item, key, "too many attempts")

    async def _refuse(self, item: RateLimitItemPerMinute, key: tuple[str, ...], what: str
                      ) -> NoReturn:
        stats = await self._limiter.get_window_stats(item, *key)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(f"{what}; try again later", retry)

    async def clear(self, per_minute: int, *key: str) -> None:
        await self._storage.clear(RateLimitItemPerMinute(per_minute).key_for(*key))
