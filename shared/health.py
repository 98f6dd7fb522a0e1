"""Health state and the small HTTP server every service runs for /health/* and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.lifecycle import StartupError, sleep_or_stop


class Health:
    """Named dependency checks; ready only when every one is ok and we are not stopping."""

    def __init__(self, *dependencies: str) -> None:
        self._failures: dict[str, str | None] = dict.fromkeys(dependencies, "not checked yet")
        self.stopping = False

    def ok(self, dependency: str) -> None:
        self._failures[dependency] = None

    def failing(self, dependency: str, reason: str) -> None:
        self._failures[dependency] = reason

    @property
    def failures(self) -> dict[str, str]:
        found = {k: v for k, v in self._failures.items() if v is not None}
        if self.stopping:
            found["service"] = "shutting down"
        return found

    @property
    def ready(self) -> bool:
        return not self.failures


async def probe_dependencies(health: Health, probes: dict[str, Callable[[], Awaitable[object]]],
                             interval: float, stop: asyncio.Event) -> None:
    """Check each dependency now and every `interval` until `stop`, so readiness says
    what is down at start and while idle, not only when work fails."""
    while True:
        for name, probe in probes.items():
            try:
                await asyncio.wait_for(probe(), timeout=interval)
            except Exception as exc:  # any failure of a probe means "not reachable"
                health.failing(name, f"{type(exc).__name__}: {exc}")
            else:
                health.ok(name)
        if await sleep_or_stop(stop, interval):
            return


def health_app(health: Health, registry: CollectorRegistry | None = None) -> Starlette:
    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> JSONResponse:
        failures = health.failures
        if failures:
            return JSONResponse({"status": "unavailable", "failing": failures}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry or REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health/live", live), Route("/health/ready", ready),
                             Route("/metrics", metrics)])


class QuietServer(uvicorn.Server):
    """uvicorn inside our own loop: the service, not uvicorn, owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind the service's HTTP port before anything else starts: a port in use is a
    StartupError now, which ends the process (uvicorn would call sys.exit from inside a
    task instead, and the process would hang half-stopped)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted
    # sockets whose protocol says TCP. Without it every answer under one segment waited
    # for the client's delayed ACK, about 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A restarted service binds over its predecessor's connections in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


async def serve_on(server: uvicorn.Server, sock: socket.socket, what: str) -> None:
    """Serve on a bound socket. uvicorn fails with sys.exit; that is caught here, in the
    task, before SystemExit reaches the event loop (which would then hang half-stopped)."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        raise StartupError(f"{what} exited ({exc.code})") from None


async def serve_health(health: Health, sock: socket.socket, stop: asyncio.Event,
                       registry: CollectorRegistry | None = None) -> None:
    """Serve on the bound `sock` until `stop` is set (after the service has drained)."""
    await serve_app(health_app(health, registry), sock, stop, "health and metrics server")


async def serve_app(app: Starlette, sock: socket.socket, stop: asyncio.Event,
                    what: str) -> None:
    """Serve a small HTTP app on the bound `sock` until `stop` is set; one that stops on
    its own is a StartupError naming `what`."""
    server = QuietServer(uvicorn.Config(app, log_level="warning", access_log=False,
                                        lifespan="off"))

    async def exit_when_stopped() -> None:
        await stop.wait()
        server.should_exit = True

    stopper = asyncio.create_task(exit_when_stopped(), name=f"{what} stop")
    try:
        await serve_on(server, sock, what)
    finally:
        stopper.cancel()
    if not stop.is_set():
        raise StartupError(f"{what} stopped on its own")
