"""One error format for every 4xx and 5xx:

    {"error": {"code": "not_found", "message": "device W-9 does not exist", "details": ...}}

Domain errors (shared/errors.py) map to statuses here, in one place; request validation
names each field; anything unexpected is logged and answered 500 without internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as redis
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InsaError,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)

log = structlog.get_logger(__name__)


STATUS: dict[type[InsaError], int] = {
    ValidationFailed: 422, NotFound: 404, Conflict: 409, Unauthorized: 401, Forbidden: 403,
    TooManyRequests: 429, DependencyUnavailable: 503,
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}}




def _documented(description: str, retry: bool = False) -> dict[str, Any]:
    """A response for the OpenAPI schema: the error body, and Retry-After if it has one."""
    doc: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": ERROR_SCHEMA}}}
    if retry:
        doc["headers"] = {"Retry-After": {"description": "Seconds to wait before trying again",
                                          "schema": {"type": "integer"}}}
    return doc


# Answers any operation may give (the app's `responses`): every one authenticates, so a
# client over a brute-force limit gets 429 (services/api/security/ratelimit.py); every
# one reads PostgreSQL, so 503 while it (or Redis, or the broker) is unreachable.
RETRY_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: _documented("Too many failed logins, API keys or refresh tokens from this client "
                     "or for this account; even a right one waits out Retry-After", True),
    503: _documented("A dependency (PostgreSQL, Redis, the broker) is unavailable", True)}
# Where the broker's accounts are changed: a command it refused for a reason of its own.
BROKER_REFUSED: dict[int | str, dict[str, Any]] = {
    400: _documented("The broker refused the account command")}


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def status_of(exc: InsaError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InsaError)
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    elif status == 503:
        headers["Retry-After"] = "5"
    details = {k: v for k, v in exc.data.items() if k in ("field", "retry_after", "failing")}
    code = getattr(exc, "reason", None) or exc.code
    return JSONResponse(body(code, exc.message, details or None), status, headers=headers)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
              for e in exc.errors()]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return JSONResponse(body("validation", message, fields), 422)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error")
    return JSONResponse(body(code, str(exc.detail)), exc.status_code,
                          headers=getattr(exc, "headers", None))


async def _bad_data(_: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refused a value the request carried (a NUL byte, a number out of range):
    the input's fault, not the server's."""
    return JSONResponse(body("invalid_input", f"invalid input: {exc}"), 422)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable", error=f"{type(exc).__name__}: {exc}")
    return JSONResponse(body("unavailable", "a dependency is unavailable; retry later"), 503,
                          headers={"Retry-After": "5"})


def internal_error(_request: Request) -> Response:
    return JSONResponse(body("internal", "internal error; it has been logged"), 500)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Last resort, for an error raised outside UnexpectedErrors (in a middleware)."""
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return internal_error(request)


class UnexpectedErrors:
    """An error no handler took: logged here, once, and answered 500 by `answer` (unless
    the response had started: then the server closes the connection, the answer cut
    short). Added inside HttpMetrics, so the 500 is counted. As a handler of Exception it
    would run in Starlette's ServerErrorMiddleware, outside every middleware, which
    re-raises after answering: the 500 went uncounted and the server logged the same
    traceback a second time. `applies`: the requests it answers (the console has its own
    page)."""

    def __init__(self, app: ASGIApp, event: str = "unhandled error",
                 answer: Callable[[Request], Response] = internal_error,
                 applies: Callable[[Request], bool] | None = None) -> None:
        self.app, self.event, self.answer, self.applies = app, event, answer, applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.applies and not self.applies(Request(scope))):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            request = Request(scope)
            log.exception(self.event, path=request.url.path, method=request.method)
            if not started:
                await self.answer(request)(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(InsaError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(asyncpg.DataError, _bad_data)
    for exc in (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError,
                TimeoutError, asyncpg.CannotConnectNowError, redis.RedisError):
        app.add_exception_handler(exc, _unavailable)
    app.add_exception_handler(Exception, _unexpected)
