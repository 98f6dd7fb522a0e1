"""Points that yield no value: a node id the server does not have, a register it does not
answer, a value the mapping cannot publish.

Such a point never reaches the platform, so the platform's own reject record cannot
hold it. It is recorded here instead, with its reason: kept in the buffer's `rejects`
table (shown by the status page) until the point yields a value again, counted in
`insa_edge_rejects_total{source, reason}`, and logged when it starts, then once per
`[status] reject_log_seconds` while it lasts. Every other point goes on as before.
"""

from __future__ import annotations

import time

import structlog

from services.edge.buffer import Buffer
from services.edge.metrics import EdgeMetrics
from services.edge.readings import Reject

log = structlog.get_logger(__name__)


class Rejects:
    def __init__(self, buffer: Buffer, metrics: EdgeMetrics, log_seconds: float) -> None:
        self.buffer = buffer
        self.metrics = metrics
        self.log_seconds = log_seconds
        # (device, metric) -> (last logged, attempts since): the points rejected now.
        self._active: dict[tuple[str, str], tuple[float, int]] = {}

    async def load(self, mapped: set[tuple[str, str]]) -> None:
        """Take up the rejects recorded before a restart, of the points still mapped."""
        await self.buffer.keep_rejects_of(mapped)
        for row in await self.buffer.rejects():
            self._active[(row["device"], row["metric"])] = (-1e18, 0)

    async def record(self, reject: Reject) -> None:
        key = (reject.device, reject.metric)
        await self.buffer.record_reject(reject)
        self.metrics.rejects.labels(reject.source, reject.reason).inc()
        now = time.monotonic()
        logged, held_back = self._active.get(key, (-1e18, 0))
        if now - logged < self.log_seconds:
            self._active[key] = (logged, held_back + 1)
            return
        self._active[key] = (now, 0)
        log.warning("point rejected", source=reject.source, point=reject.point,
                    device=reject.device, metric=reject.metric, reason=reject.reason,
                    detail=reject.detail, attempts_since_last_logged=held_back)

    async def clear(self, device: str, metric: str) -> None:
        """The point yielded a value: it is no longer rejected."""
        if self._active.pop((device, metric), None) is not None:
            await self.buffer.clear_reject(device, metric)
            log.info("point recovered", device=device, metric=metric)

    def is_rejected(self, device: str, metric: str) -> bool:
        return (device, metric) in self._active
