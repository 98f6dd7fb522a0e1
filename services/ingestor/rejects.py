"""Log rejects once per reason per window, with how many were not logged."""

from __future__ import annotations

import time

import structlog

from services.ingestor.batch import Reject

log = structlog.get_logger(__name__)


class RejectLog:
    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self._windows: dict[str, tuple[float, int]] = {}  # reason -> (window start, suppressed)

    def record(self, reject: Reject) -> None:
        now = time.monotonic()
        started, suppressed = self._windows.get(reject.reason, (-1e18, 0))
        if now - started < self.window:
            self._windows[reject.reason] = (started, suppressed + 1)
            return
        self._windows[reject.reason] = (now, 0)
        log.warning("message rejected", reason=reject.reason, topic=reject.topic,
                    detail=reject.detail, suppressed_in_last_window=suppressed)
