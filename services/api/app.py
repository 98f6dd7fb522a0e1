"""The FastAPI application: everything under /api/v1; /health/live, /health/ready and
/metrics at the root, as every service has them."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import audit, errors
from services.api.bootstrap import ensure_first_admin
from services.api.broker import api_connection
from services.api.commands import consume_acks, sweep_timeouts
from services.api.console import install_console
from services.api.deps import Resources
from services.api.docs import install_docs
from services.api.middleware import BodyLimit, SecurityHeaders, route_limits
from services.api.routes import (
    alerts,
    analytics,
    api_keys,
    audit_log,
    auth,
    commands,
    devices,
    diagnoses,
    gateways,
    ingest,
    live,
    provisioning,
    rejects,
    rules,
    subscribers,
    telemetry,
    users,
)
from services.api.security.ratelimit import FailureLimiter
from services.api.security.tokens import Tokens
from services.api.settings import ApiSettings
from services.api.static_files import install_static
from shared import db, redis_client
from shared.errors import Unauthorized
from shared.health import Health, probe_dependencies
from shared.lifecycle import describe, spawn_part
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)
PREFIX = "/api/v1"
ROUTERS = (auth.router, users.router, api_keys.router, audit_log.router, subscribers.router,
           diagnoses.router, rules.router, alerts.router,
           devices.router, provisioning.router, gateways.router, commands.router,
           telemetry.router, rejects.router, ingest.router, analytics.router, live.router)
# Long-running jobs of the API (e.g. command answers and timeouts), run for the app's
# lifetime with its resources until `stop` is set. Each is a part of the service, as a
# worker's tasks are (shared/lifecycle.py): one that fails is logged with its name and
# error at once, fails readiness, and is reported to create_app's `on_part_failed`.
Background = Callable[[Resources, asyncio.Event], Coroutine[Any, Any, None]]
PartFailure = Callable[[str, BaseException], None]
BACKGROUND: tuple[Background, ...] = (consume_acks, sweep_timeouts, live.live_feed,
                                      audit.upkeep)


class ApiApp(FastAPI):
    """FastAPI with the security headers outside every other layer, even the one that
    answers an unhandled error (Starlette puts that outside all added middleware)."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


class HttpMetrics:
    """Requests by route template and status, and the time to the response's start (not
    to its end: a live feed lasts for hours). Plain ASGI, so an exception in a route
    still reaches the error handlers untouched."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("insa_api_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=registry)
        self.seconds = Histogram("insa_api_request_seconds",
                                 "Time from request to response start", ["method", "route"],
                                 registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def measured(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                self.requests.labels(scope["method"], route, str(message["status"])).inc()
                self.seconds.labels(scope["method"], route).observe(
                    time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, measured)


@asynccontextmanager
async def open_resources(common: CommonSettings, settings: ApiSettings, health: Health,
                         part_failed: PartFailure) -> AsyncIterator[Resources]:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is None:
        log.warning("INSA_API_JWT_SECRET unset (development): tokens end with this process")
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=10_000)
    # The API leaves no session state behind (only SET LOCAL, transaction-level locks,
    # cursors inside transactions): no reset query after every query.
    pool = await db.create_pool(common.database_url.get_secret_value(), max_size=10,
                                application_name="insa-api", session_state=False)
    redis_url = common.redis_url.get_secret_value()
    redis_conn = redis_client.create_redis(redis_url)
    mqtt, broker = api_connection(common, settings, health,
                                  lambda topic, payload: keep(received, topic, payload))
    stopped = asyncio.Event()
    connection = spawn_part("mqtt", mqtt.run(stopped), part_failed)
    try:
        yield Resources(settings, pool, redis_conn,
                        Tokens(secret or secrets.token_urlsafe(48),
                               settings.access_token_seconds, settings.refresh_token_seconds,
                               settings.refresh_reuse_grace_seconds),
                        FailureLimiter(redis_conn), mqtt, broker, health, received)
    finally:
        stopped.set()
        await asyncio.gather(connection, return_exceptions=True)  # a failure: logged already
        await redis_conn.aclose()
        await pool.close()


def keep(received: asyncio.Queue[tuple[str, bytes]], topic: str, payload: bytes) -> None:
    """On the event loop: queue what the broker delivered; when the consumer is this far
    behind (a device flooding its answers), drop it on record rather than grow."""
    try:
        received.put_nowait((topic, payload))
    except asyncio.QueueFull:
        log.warning("received message dropped: queue full", topic=topic)


def create_app(common: CommonSettings, settings: ApiSettings,
               registry: CollectorRegistry = REGISTRY,
               on_part_failed: PartFailure | None = None) -> FastAPI:
    """`on_part_failed(name, error)`: what the process does when a background part fails
    (services/api/main.py ends it, as a worker ends; by default only readiness fails)."""
    health = Health("postgres", "redis", "mqtt")

    def part_failed(part: str, exc: BaseException) -> None:
        health.failing(part, f"failed: {describe(exc)}")  # for good: nothing restarts it
        if on_part_failed is not None:
            on_part_failed(part, exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(common, settings, health, part_failed) as res:
            app.state.resources = res
            await db.until_available(lambda: bootstrap(res), health, max_delay=5.0)
            stop = asyncio.Event()
            tasks = [spawn_part("probe", probe_dependencies(
                health, {"postgres": lambda: db.ping(res.pool), "redis": res.redis.ping},
                5.0, stop), part_failed),
                     *(spawn_part(job.__name__, job(res, stop), part_failed)
                       for job in BACKGROUND)]
            try:
                yield
            finally:
                health.stopping = True
                stop.set()
                # A part that failed was logged when it did; the others end on `stop`.
                await asyncio.gather(*tasks, return_exceptions=True)

    # The docs and the schema are routes of our own (install_docs), as INSA_API_DOCS says.
    app = ApiApp(title="INSA IIoT platform API", version="1", lifespan=lifespan,
                 openapi_url=None, docs_url=None, redoc_url=None,
                 responses={**{code: {"description": text, "content": {"application/json": {
                     "schema": errors.ERROR_SCHEMA}}} for code, text in (
                     (401, "Not authenticated"), (403, "Not allowed for this role"),
                     (413, "Body over the limit: INSA_API_MAX_BODY_BYTES, or the "
                           "operation's x-max-body-bytes"),
                     (422, "Invalid input; the message names the field"))},
                            **errors.RETRY_RESPONSES})
    errors.install(app)
    api = APIRouter(prefix=PREFIX)
    for router in ROUTERS:
        api.include_router(router)
    app.include_router(api)
    # Innermost first, all inside the metrics, so what they answer is counted: the
    # console's 500 page for its paths, the API's 500 for the rest, the body limit (413).
    install_console(app)
    app.add_middleware(errors.UnexpectedErrors)
    app.add_middleware(BodyLimit, default=settings.max_body_bytes,
                       routes=route_limits(ROUTERS, PREFIX))
    app.add_middleware(HttpMetrics, registry=registry)
    install_docs(app, settings.docs_exposure(common.env), PREFIX)
    install_static(app)  # /static: the pages' scripts and styles (after any mount under it)

    @app.get("/health/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        if health.failures:
            return JSONResponse({"status": "unavailable", "failing": health.failures}, 503)
        return JSONResponse({"status": "ok"})

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if token is None and common.env == "production":
        log.warning("INSA_API_METRICS_TOKEN unset in production: /metrics is not served")
        return app

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        if token is not None and not bearer_is(request, token):
            raise Unauthorized("/metrics needs Authorization: Bearer <INSA_API_METRICS_TOKEN>")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def bearer_is(request: Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and \
        hmac.compare_digest(credentials.strip().encode(), token.encode())


async def bootstrap(res: Resources) -> None:
    async with res.pool.acquire() as conn:
        await ensure_first_admin(conn, res.settings)
