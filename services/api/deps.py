"""Request dependencies: the app's resources, who is calling, and what they may do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import asyncpg
import redis.asyncio as redis
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from services.api import audit
from services.api.broker import ApiBroker
from services.api.security import keys
from services.api.security.permissions import PERMISSIONS, allowed
from services.api.security.principal import Principal
from services.api.security.ratelimit import FailureLimiter
from services.api.security.tokens import Tokens
from services.api.settings import ApiSettings
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.health import Health


@dataclass
class Resources:
    """Opened in the app's lifespan and handed to routes (never module globals)."""
    settings: ApiSettings
    pool: asyncpg.Pool
    redis: redis.Redis
    tokens: Tokens
    limiter: FailureLimiter
    broker: ApiBroker
    health: Health
    # What the broker delivered to the API (topic, payload): the devices' command answers.
    received: asyncio.Queue[tuple[str, bytes]]


def resources(request: Request) -> Resources:
    found: Resources = request.app.state.resources
    return found


Res = Annotated[Resources, Depends(resources)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                        description="An API key (machines and devices)")


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def principal(request: Request, res: Res,
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    api_key: Annotated[str | None, Depends(_api_key)]) -> Principal:
    if api_key is not None:
        return await _from_key(res, api_key, client_of(request))
    if bearer is None:
        raise Unauthorized("authentication required: a bearer token or an X-API-Key")
    claims = res.tokens.decode(bearer.credentials, "access")
    row = await res.pool.fetchrow("SELECT username, role, disabled FROM users WHERE id = $1",
                                  int(claims["sub"]))
    if row is None or row["disabled"]:
        raise Unauthorized("account disabled or deleted")
    # The stored role, not the token's: a demotion takes effect at once.
    return Principal("user", int(claims["sub"]), row["username"], row["role"])


async def _from_key(res: Res, api_key: str, client: str) -> Principal:
    limit = res.settings.key_failures_per_minute
    await res.limiter.check(limit, "key", client)
    found = await keys.authenticate(res.pool, api_key)  # type: ignore[arg-type]
    if found is None:
        await res.limiter.failed(limit, "key", client)
        await audit.record(res.pool, f"client:{client}", "auth.api_key", keys.split(api_key),
                           "failure", reason="unknown, revoked or expired key")
        raise Unauthorized("invalid API key")
    return found


Caller = Annotated[Principal, Depends(principal)]


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A route's one permission (services/api/security/permissions.py)."""
    if permission not in PERMISSIONS:
        raise KeyError(permission)

    async def check(request: Request, res: Res, who: Caller) -> Principal:
        if not allowed(who.role, permission):
            await audit.record(res.pool, who.actor, "permission.denied", request.url.path,
                               "failure", permission=permission, method=request.method,
                               role=who.role)
            raise Forbidden(f"role {who.role} may not {permission}")
        return who

    check.permission = permission  # type: ignore[attr-defined]  # read by the RBAC test
    return check


def visible(who: Principal, device_id: str) -> None:
    """A principal scoped to one device sees nothing of another (404: no existence leak)."""
    if not who.sees(device_id):
        raise NotFound(f"device {device_id} does not exist")
