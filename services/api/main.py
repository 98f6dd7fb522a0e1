"""API entry point: settings, then uvicorn serving the app (it owns SIGTERM: it stops
accepting, finishes in-flight requests within the drain deadline, then runs shutdown).
A background part that fails ends the process as it ends a worker (shared/lifecycle.py):
the same drain, then a non-zero exit, so the supervisor restarts the API and the part."""

from __future__ import annotations

import gc
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI

from services.api.app import create_app
from services.api.connections import GuardedWebSocketProtocol, http_protocol
from services.api.settings import ApiSettings
from shared.health import listen_socket, serve_on
from shared.lifecycle import (
    HARD_EXIT_GRACE_SECONDS,
    PartFailed,
    describe,
    exit_unless_stopped,
)
from shared.service import run_service
from shared.settings import CommonSettings


def server_config(app: FastAPI, settings: ApiSettings, **extra: Any) -> uvicorn.Config:
    """uvicorn's settings for the API. `X-Forwarded-For` names the client (for the rate
    limits and the audit trail) only when it comes from a proxy the operator named:
    uvicorn's own default trusts it from 127.0.0.1, so any local client could forge
    its address and get past the login and key limits.

    Connections are bounded: at most `max_connections` open (uvicorn answers 503 beyond),
    a headers deadline (services/api/connections.py), idle keep-alive connections closed
    after `keep_alive_seconds`, headers at most 16 KiB (h11's default, kept explicit).
    The live WebSocket takes no messages: 64 KiB each at most instead of uvicorn's 16 MiB,
    and its pings (every 20 s, 20 s to answer) end a connection whose peer vanished."""
    proxies = settings.forwarded_allow_ips.strip()
    return uvicorn.Config(app, log_level="warning", access_log=False,
                          proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                          timeout_graceful_shutdown=int(settings.drain_seconds),
                          http=http_protocol(settings.header_timeout_seconds),
                          ws=GuardedWebSocketProtocol,
                          limit_concurrency=settings.max_connections,
                          timeout_keep_alive=settings.keep_alive_seconds,
                          h11_max_incomplete_event_size=16 * 1024,
                          ws_max_size=64 * 1024, ws_ping_interval=20.0, ws_ping_timeout=20.0,
                          **extra)


async def serve(common: CommonSettings, settings: ApiSettings) -> None:
    # The port first: taken, the API exits now and its supervisor restarts it.
    sock = listen_socket(settings.http_host, settings.http_port)
    failed: list[tuple[str, BaseException]] = []
    hard_exit: list[threading.Timer] = []

    def stop_serving(part: str, exc: BaseException) -> None:
        if failed:
            return
        failed.append((part, exc))
        server.should_exit = True  # uvicorn's own graceful shutdown, as on SIGTERM
        hard_exit.append(exit_unless_stopped(
            settings.drain_seconds + HARD_EXIT_GRACE_SECONDS, part))

    server = uvicorn.Server(server_config(create_app(common, settings,
                                                     on_part_failed=stop_serving), settings))
    # What start-up made (modules, the app, its routes and schemas) lives for the whole
    # process: out of the collector's sight, full collections no longer walk it.
    gc.freeze()
    await serve_on(server, sock, "the API server")
    for timer in hard_exit:  # stopped in time
        timer.cancel()
    if failed:
        part, exc = failed[0]
        raise PartFailed(f"{part} failed: {describe(exc)}") from exc


def main() -> None:
    run_service("api", ApiSettings, serve)


if __name__ == "__main__":
    main()
