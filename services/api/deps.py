"""Request dependencies: the app's resources, who is calling, and what they may do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
import redis.asyncio as redis
from fastapi import Depends, Request
from fastapi.requests import HTTPConnection
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from services.api import audit
from services.api.live import LiveHub
from services.api.security import keys
from services.api.security.permissions import PERMISSIONS, allowed
from services.api.security.principal import Principal
from services.api.security.ratelimit import FailureLimiter, key_limit
from services.api.security.tokens import Tokens, account_version
from services.api.settings import ApiSettings
from shared.broker_control import BrokerControl
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.health import Health
from shared.mqtt_connection import MqttConnection

EXPORTS_AT_ONCE = 3  # of the pool's 10 connections


@dataclass
class Resources:
    """Opened in the app's lifespan and handed to routes (never module globals)."""
    settings: ApiSettings
    pool: asyncpg.Pool
    redis: redis.Redis
    tokens: Tokens
    limiter: FailureLimiter
    mqtt: MqttConnection  # the API's one broker connection
    broker: BrokerControl  # its `$CONTROL` client (device accounts)
    health: Health
    # What the broker delivered to the API (topic, payload): the devices' command answers.
    received: asyncio.Queue[tuple[str, bytes]]
    # The live feed's fan-out over the Redis streams (its readers run as a BACKGROUND job).
    live: LiveHub = field(init=False)

    # CSV exports running at once: each holds a pool connection while its client reads.
    exports: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.exports = asyncio.Semaphore(EXPORTS_AT_ONCE)
        self.live = LiveHub(self.redis, queue_size=s.live_queue_size,
                            max_clients=s.live_max_clients, backlog_max=s.live_backlog_max,
                            heartbeat_seconds=s.live_heartbeat_seconds)


async def resources(conn: HTTPConnection) -> Resources:
    # async: FastAPI runs a plain function dependency in a worker thread, every request.
    found: Resources = conn.app.state.resources
    return found


Res = Annotated[Resources, Depends(resources)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                        description="An API key (machines and devices)")


def client_of(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


async def principal(request: Request, res: Res,
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    api_key: Annotated[str | None, Depends(_api_key)]) -> Principal:
    return await authenticate(res, client_of(request),
                              bearer.credentials if bearer else None, api_key)


async def authenticate(res: Resources, client: str, token: str | None,
                       api_key: str | None) -> Principal:
    """An API key, else an access token (header or, for the live feed, query string)."""
    if api_key is not None:
        return await _from_key(res, api_key, client)
    if token is None:
        raise Unauthorized("authentication required: a bearer token or an X-API-Key")
    claims = res.tokens.decode(token, "access")
    return await user_principal(res, int(claims["sub"]), claims.get("ver"),
                                expires=float(claims["exp"]))


async def user_principal(res: Resources, user_id: int, version: object,
                         expires: float | None = None) -> Principal:
    """The user as they are now, for a credential (a token, a console session) issued at
    account `version`."""
    row = await res.pool.fetchrow("SELECT username, role, disabled, updated_at FROM users "
                                  "WHERE id = $1", user_id)
    if row is None or row["disabled"]:
        raise Unauthorized("account disabled or deleted")
    current = account_version(row["updated_at"])
    if version != current:
        # The credential carries the account's version (its updated_at, strictly
        # increasing with each change) as it was when it was issued: any change since
        # (password, role, status) ends it. An equality on the database's own value, not
        # issue times compared across clocks or rounded to seconds, so a token issued
        # just before a change is refused and one issued just after is good, however
        # close the two.
        raise Unauthorized("credential issued before a change to the account; log in again")
    # The stored role, not the credential's: a demotion takes effect at once.
    return Principal("user", user_id, row["username"], row["role"], expires=expires,
                     version=current)


async def still_valid(res: Resources, who: Principal) -> bool:
    """For connections that outlive a request (the live feed): the credential has not
    lapsed and the account or key is unchanged, not disabled, revoked or expired."""
    if who.expires is not None and time.time() >= who.expires:
        return False
    if who.kind == "key":
        return bool(await res.pool.fetchval(
            "SELECT EXISTS (SELECT FROM api_keys WHERE id = $1 AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > now()))", who.id))
    row = await res.pool.fetchrow("SELECT disabled, updated_at FROM users WHERE id = $1",
                                  who.id)
    return row is not None and not row["disabled"] and \
        account_version(row["updated_at"]) == who.version


async def _from_key(res: Res, api_key: str, client: str) -> Principal:
    # A place is reserved before the key is looked up, so a burst of guesses cannot all
    # pass one check; a good key gives it back, a bad one keeps it as its failure.
    held = await res.limiter.reserve(key_limit(res.settings, client))
    try:
        found = await keys.authenticate(res.pool, api_key)  # type: ignore[arg-type]
    except Exception:
        await res.limiter.release(held)  # no verdict on the key (the database failed)
        raise
    if found is None:
        await audit.record(res.pool, f"client:{client}", "auth.api_key", keys.split(api_key),
                           "failure", reason="unknown, revoked or expired key")
        raise Unauthorized("invalid API key")
    await res.limiter.release(held)
    return found


Caller = Annotated[Principal, Depends(principal)]


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A route's one permission (services/api/security/permissions.py)."""
    if permission not in PERMISSIONS:
        raise KeyError(permission)

    async def check(request: Request, res: Res, who: Caller) -> Principal:
        await authorize(res, who, permission, request)
        return who

    check.permission = permission  # type: ignore[attr-defined]  # read by the RBAC test
    return check


async def authorize(res: Resources, who: Principal, permission: str,
                    conn: HTTPConnection) -> None:
    """Forbidden, on the audit trail, unless `who`'s role has `permission`."""
    if not allowed(who.role, permission, who.device_id):
        await audit.record(res.pool, who.actor, "permission.denied", conn.url.path,
                           "failure", permission=permission,
                           method=conn.scope.get("method", "WEBSOCKET"), role=who.role)
        scoped = f" scoped to {who.device_id}" if who.device_id else ""
        raise Forbidden(f"role {who.role}{scoped} may not {permission}")


def visible(who: Principal, device_id: str) -> None:
    """A principal scoped to one device sees nothing of another (404: no existence leak)."""
    if not who.sees(device_id):
        raise NotFound(f"device {device_id} does not exist")
