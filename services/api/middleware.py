"""Plain ASGI middleware of the API: the request body limit and the security headers.

Plain ASGI (no BaseHTTPMiddleware), so a live feed streams through untouched and an
exception in a route still reaches the error handlers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute, APIRouter
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import errors

BODY_LIMIT_KEY = "x-max-body-bytes"  # an operation's own limit, shown in the OpenAPI schema
RouteLimit = tuple[frozenset[str], re.Pattern[str], int]

# Every response: the API answers JSON, which must never be sniffed into HTML, framed or
# allowed to load anything. A route may set its own policy (the docs pages do) and its
# own Cache-Control; nothing of the API's is for a shared or browser cache to keep
# (tokens, keys, device passwords, per-caller data).
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": API_POLICY,
    "Cache-Control": "no-store",
}


def body_limit(limit: int) -> dict[str, Any]:
    """A route's `openapi_extra` for a body limit other than INSA_API_MAX_BODY_BYTES."""
    return {BODY_LIMIT_KEY: limit}


def route_limits(routers: Iterable[APIRouter], prefix: str) -> list[RouteLimit]:
    """(methods, path pattern, limit) of every route of `routers`, mounted under `prefix`,
    that declares its own limit. Read from the routers themselves: what the app holds
    after include_router differs between FastAPI versions."""
    found = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.openapi_extra and \
                    BODY_LIMIT_KEY in route.openapi_extra:
                found.append((frozenset(route.methods or ()),
                              compile_path(prefix + route.path)[0],
                              int(route.openapi_extra[BODY_LIMIT_KEY])))
    return found


class BodyTooLarge(HTTPException):
    """From `receive`: FastAPI passes an HTTPException raised while it reads the body on
    to the handlers (anything else would become a 400), and so does a route reading its
    own stream. The rest of the body is unread: the connection closes after the answer."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes", {"Connection": "close"})


class BodyLimit:
    """Refuses a request body over its route's limit with 413: at once from Content-Length,
    before anything is read (and before authentication, which FastAPI does after reading
    the body), or, for a chunked body, as soon as the bytes received pass it."""

    def __init__(self, app: ASGIApp, default: int,
                 routes: Iterable[RouteLimit] = ()) -> None:
        self.app, self.default, self.routes = app, default, list(routes)

    def limit_of(self, method: str, path: str) -> int:
        for methods, pattern, limit in self.routes:
            if method in methods and pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["method"], scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            too_large = BodyTooLarge(limit)
            response = JSONResponse(errors.body("payload_too_large", too_large.detail), 413,
                                    headers=too_large.headers)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """SECURITY_HEADERS on every HTTP response, unless the route set its own. Outside
    every other layer of the app (services/api/app.py), so even a 500 has them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
