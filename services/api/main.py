"""API entry point: settings, then uvicorn serving the app (it owns SIGTERM: it stops
accepting, finishes in-flight requests within the drain deadline, then runs shutdown)."""

from __future__ import annotations

import uvicorn

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.health import listen_socket, serve_on
from shared.service import run_service
from shared.settings import CommonSettings


async def serve(common: CommonSettings, settings: ApiSettings) -> None:
    # The port first: taken, the API exits now and its supervisor restarts it.
    sock = listen_socket(settings.http_host, settings.http_port)
    config = uvicorn.Config(create_app(common, settings), log_level="warning",
                            access_log=False, proxy_headers=True,
                            forwarded_allow_ips=settings.forwarded_allow_ips,
                            timeout_graceful_shutdown=int(settings.drain_seconds))
    await serve_on(uvicorn.Server(config), sock, "the API server")


def main() -> None:
    run_service("api", ApiSettings, serve)


if __name__ == "__main__":
    main()
