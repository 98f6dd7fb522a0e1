"""API entry point: settings, then uvicorn serving the app (it owns SIGTERM: it stops
accepting, finishes in-flight requests within the drain deadline, then runs shutdown)."""

from __future__ import annotations

import uvicorn

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared import settings as shared_settings
from shared.logging import configure_logging


def main() -> None:
    common, settings = shared_settings.load(ApiSettings)
    configure_logging("api", common.log_level, common.log_format)
    uvicorn.run(create_app(common, settings), host=settings.http_host, port=settings.http_port,
                log_level="warning", access_log=False, proxy_headers=True,
                forwarded_allow_ips=settings.forwarded_allow_ips,
                timeout_graceful_shutdown=int(settings.drain_seconds))


if __name__ == "__main__":
    main()
