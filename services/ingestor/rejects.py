"""Log rejects (and parser errors) once per reason per window, with how many were not logged."""

from __future__ import annotations

import time

import structlog

from services.ingestor.batch import Reject

log = structlog.get_logger(__name__)


class LogWindow:
    """Lets one log line per key through per window and counts the ones it holds back.

    Keys must come from a small fixed set (reasons, exception types), not from payloads."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (start, suppressed)

    def allow(self, key: str) -> int | None:
        """None: do not log. Otherwise log, with this many suppressed in the last window."""
        now = time.monotonic()
        started, suppressed = self._windows.get(key, (-1e18, 0))
        if now - started < self.window:
            self._windows[key] = (started, suppressed + 1)
            return None
        self._windows[key] = (now, 0)
        return suppressed


class RejectLog:
    def __init__(self, window_seconds: float) -> None:
        self._limit = LogWindow(window_seconds)

    def record(self, reject: Reject) -> None:
        suppressed = self._limit.allow(reject.reason)
        if suppressed is None:
            return
        log.warning("message rejected", reason=reject.reason, topic=reject.topic,
                    detail=reject.detail, suppressed_in_last_window=suppressed)
