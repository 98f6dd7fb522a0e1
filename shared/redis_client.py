"""Redis client factory (redis.asyncio) with bounded timeouts and health checks."""

from __future__ import annotations

import redis.asyncio as redis


def create_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=15,
        retry_on_timeout=False, decode_responses=False)


# Down, loading, out of memory, read-only replica, MISCONF: every Redis error is waited out.
UNAVAILABLE = (OSError, TimeoutError, redis.RedisError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)
