"""Brute-force limits on logins, API keys and refresh tokens, in Redis so every API
replica shares them. Over a limit: 429 with Retry-After.

Every try *reserves* a place in each limit it falls under before it is judged, in one Lua
script (atomic in Redis): a burst sent at once cannot all pass one check, since with N
places left N tries are judged and the rest refused unjudged. A try that succeeds gives
its places back (`release`), so only failures stay counted: a user who types the
password right, or a machine with a good key, is not slowed (at most N of one client's
tries are being judged at any instant). A refusal is not written to the audit trail each
time but tallied in Redis in the same script; `take_refusals` hands the tallies to the
audit job, one row per limit and source a minute (services/api/audit.py).

Each limit is a moving window: a sorted set of the times of its counted tries, by Redis's
clock (one clock for every replica), trimmed on each use and expiring with the window.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis

from services.api.settings import ApiSettings
from shared.errors import TooManyRequests

PREFIX = "insa:limits"
REFUSALS = f"{PREFIX}:refused"  # hash: audit row (JSON) → refusals since last taken

# KEYS: one sorted set per limit, then the refusal tally. ARGV[1]: this try's member;
# then per limit: count, window (ms), the tally field of a refusal by it.
# {0, 0}: reserved in every limit. Else {i, ms}: limit i (the first full one) refused,
# and ms until every full limit has a place again; nothing reserved, the refusal tallied.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limits = #KEYS - 1
local full, wait = 0, 0
for i = 1, limits do
  local count, window = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local n = redis.call('ZCARD', KEYS[i])
  if n >= count then
    if full == 0 then full = i end
    local frees = redis.call('ZRANGE', KEYS[i], n - count, n - count, 'WITHSCORES')
    wait = math.max(wait, tonumber(frees[2]) + window - now)
  end
end
if full > 0 then
  redis.call('HINCRBY', KEYS[limits + 1], ARGV[3 * full + 1], 1)
  return {full, wait}
end
for i = 1, limits do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[3 * i]))
end
return {0, 0}
"""

# Read and delete the tallies at once, so two replicas never report the same refusals.
_TAKE = """
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` counted tries per `seconds` for `key`; a refusal by it is reported
    as an audit row of `actor`, `action`, `subject`, `client` (None where the tries come
    from anywhere: one row for them all)."""
    name: str
    count: int
    seconds: int
    key: tuple[str, ...]
    actor: str
    action: str
    subject: str | None = None
    client: str | None = None

    @property
    def redis_key(self) -> str:
        # JSON: the parts (a username, an IPv6 address) may hold any separator.
        return f"{PREFIX}:{self.name}:{orjson.dumps(self.key).decode()}"

    @property
    def tally(self) -> str:
        detail = {"limit": self.name, "client": self.client}
        return orjson.dumps([self.actor, self.action, self.subject, detail]).decode()


def login_limits(settings: ApiSettings, username: str, client: str) -> tuple[Limit, ...]:
    """In this order: a client's logins, an account's from that client, and the
    account's from anywhere (guesses spread over many addresses)."""
    actor = f"user:{username}"
    return (Limit("client", settings.client_login_attempts_per_minute, 60, (client,),
                  f"client:{client}", "auth.login", client=client),
            Limit("account_client", settings.login_attempts_per_minute, 60,
                  (username, client), actor, "auth.login", username, client),
            Limit("account", settings.account_login_failures,
                  settings.account_login_window_seconds, (username,), actor, "auth.login",
                  username))


def key_limit(settings: ApiSettings, client: str) -> Limit:
    return Limit("api_key", settings.key_failures_per_minute, 60, (client,),
                 f"client:{client}", "auth.api_key", client=client)


def refresh_limit(settings: ApiSettings, client: str) -> Limit:
    return Limit("refresh", settings.refresh_failures_per_minute, 60, (client,),
                 f"client:{client}", "auth.refresh", client=client)


@dataclass(frozen=True, slots=True)
class Reservation:
    member: str
    limits: tuple[Limit, ...]


class FailureLimiter:
    def __init__(self, redis_conn: redis.Redis) -> None:
        self._redis = redis_conn
        self._reserve = redis_conn.register_script(_RESERVE)
        self._take = redis_conn.register_script(_TAKE)

    async def reserve(self, *limits: Limit) -> Reservation:
        """A place in every limit for this try, or 429 (and the refusal tallied)."""
        member = uuid.uuid4().hex
        args: list[Any] = [member]
        for limit in limits:
            args += [limit.count, limit.seconds * 1000, limit.tally]
        full, wait_ms = await self._reserve(
            keys=[*(limit.redis_key for limit in limits), REFUSALS], args=args)
        if full:
            raise TooManyRequests("too many failed attempts; try again later",
                                  max(1, math.ceil(int(wait_ms) / 1000)))
        return Reservation(member, limits)

    async def release(self, held: Reservation) -> None:
        """Give the places back: the try succeeded, or was never judged."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for limit in held.limits:
                pipe.zrem(limit.redis_key, held.member)
            await pipe.execute()

    async def clear(self, limit: Limit) -> None:
        await self._redis.delete(limit.redis_key)

    async def take_refusals(self) -> list[tuple[str, str, str | None, dict[str, Any], int]]:
        """The refusals tallied since last taken: (actor, action, subject, detail, count)."""
        flat = await self._take(keys=[REFUSALS])
        taken = []
        for field, count in zip(flat[::2], flat[1::2], strict=True):
            actor, action, subject, detail = orjson.loads(field)
            taken.append((actor, action, subject, detail, int(count)))
        return taken

    async def put_back(self, taken: list[tuple[str, str, str | None, dict[str, Any], int]]
                       ) -> None:
        """Tallies that could not be reported (the database was down): for the next time."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for actor, action, subject, detail, count in taken:
                pipe.hincrby(REFUSALS, orjson.dumps([actor, action, subject, detail]).decode(),
                             count)
            await pipe.execute()
