"""A service's entry point: settings, logging, then its asyncio main, with an exit
status a supervisor can act on."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from shared import settings as shared_settings
from shared.lifecycle import EXIT_FAILED, StartupError, describe, leaf
from shared.logging import configure_logging
from shared.settings import CommonSettings, ServiceSettings

log = structlog.get_logger(__name__)
S = TypeVar("S", bound=ServiceSettings)


def run_service(service: str, settings_cls: type[S],
                main: Callable[[CommonSettings, S], Coroutine[Any, Any, None]]) -> None:
    """Load settings, then `asyncio.run(main(common, settings))`. Bad settings, a part that
    cannot start (a port in use) or one that fails later each end the process with one
    clear log line and a non-zero status, so the supervisor restarts it."""
    try:
        common, settings = shared_settings.load(settings_cls)
    except ValueError as exc:  # pydantic's ValidationError is one
        configure_logging(service)
        log.error(f"{service} could not start: invalid settings", error=str(exc),
                  exit_status=EXIT_FAILED)
        sys.exit(EXIT_FAILED)
    configure_logging(service, common.log_level, common.log_format)
    try:
        asyncio.run(main(common, settings))
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        startup = isinstance(leaf(exc), StartupError)
        log.error(f"{service} {'could not start' if startup else 'failed'}; exiting",
                  error=describe(exc), exit_status=EXIT_FAILED, exc_info=not startup)
        sys.exit(EXIT_FAILED)
