"""From telemetry stream entries to committed diagnosis events.

Delivery: the stream is at-least-once and a device's entries reach one replica in
order. A batch is decoded first (a malformed entry fails the batch before the engine
sees it, so the consumer retries entry by entry and dead-letters the poison), judged,
and committed with each device's progress in one transaction; then the consumer
acknowledges it. Readings at or before a device's progress were judged before (a
redelivery after a crash) and are skipped, so no event is emitted twice; a restart
rebuilds each device's state from stored telemetry up to its progress.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
import structlog

from services.diagnostics.metrics import DiagnosticsMetrics
from shared import db
from shared.diagnosis import repository
from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.events import DiagnosisEvent, OpenDiagnosis, Reading
from shared.health import Health
from shared.partition import Partition
from shared.streams import StreamMessage, decode_telemetry
from shared.units import CANONICAL

log = structlog.get_logger(__name__)


class Judge:
    def __init__(self, engine: DiagnosisEngine, pool: asyncpg.Pool, partition: Partition,
                 metrics: DiagnosticsMetrics, health: Health, *, replay_readings: int,
                 retry_max_delay: float, on_committed: Callable[[], None]) -> None:
        self.engine = engine
        self.pool = pool
        self.partition = partition
        self.metrics = metrics
        self.health = health
        self.replay_readings = replay_readings
        self.retry_max_delay = retry_max_delay
        self.on_committed = on_committed

    async def handle(self, messages: list[StreamMessage]) -> None:
        """The stream consumer's handler for one batch."""
        readings = [r for m in messages if (r := self._decode(m)) is not None]
        # First seen since start (or forgotten when idle): rebuilt from storage first.
        new = sorted({r.device_id for r in readings if r.device_id not in self.engine.wells})
        if new:
            await self._until_available(lambda: self._rebuild(new))
        started = time.monotonic()
        events: list[DiagnosisEvent] = []
        progress: dict[str, float] = {}
        judged = 0
        for reading in readings:
            try:
                events += self.engine.process(reading)
            except Exception:  # an engine bug must not stop the stream
                self.metrics.skipped.labels("engine_error").inc()
                log.exception("engine failed on a reading", device=reading.device_id,
                              ts=reading.ts)
                continue
            judged += 1
            progress[reading.device_id] = max(progress.get(reading.device_id, 0.0),
                                              reading.ts)
        if progress or events:
            # Judged readings now live only in the engine: the commit is waited for, never
            # given up (a stop mid-outage leaves the batch unacked, and a restart replays).
            await self._until_available(lambda: self._commit(events, progress))
        self.metrics.readings.inc(judged)
        for event in events:
            self.metrics.diagnoses.labels(event.code, event.severity,
                                          str(event.cleared).lower()).inc()
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        if progress:
            self.metrics.behind_seconds.set(max(0.0, time.time() - max(progress.values())))
        self.metrics.devices.set(len(self.engine.wells))
        if events:
            self.on_committed()

    def _decode(self, message: StreamMessage) -> Reading | None:
        """None for another replica's device; ValueError for an entry out of contract."""
        try:
            entry = decode_telemetry(message.fields)
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"entry {message.id} is not a telemetry entry: {exc}") from exc
        if not self.partition.owns_device(entry.device_id):
            return None
        values: dict[str, float] = {}
        for metric, value in entry.metrics.items():
            if metric not in CANONICAL:
                self.metrics.skipped.labels("unknown_metric").inc()
            elif isinstance(value, bool) or not isinstance(value, int | float):
                self.metrics.skipped.labels("not_a_number").inc()
            else:
                values[metric] = float(value)
        if not values:
            self.metrics.skipped.labels("no_usable_values").inc()
            return None
        return Reading(entry.device_id, entry.ts_ms / 1000, values)

    async def _rebuild(self, device_ids: list[str]) -> None:
        """Replay what was judged before, silently, and continue from the open diagnoses."""
        async with self.pool.acquire() as conn:
            histories = await repository.history(conn, device_ids, self.replay_readings)
        for device_id, past in histories.items():
            self.engine.forget(device_id)
            for reading in past.readings:
                self.engine.process(reading)
            self.engine.reset_diagnoses(device_id, [
                OpenDiagnosis(row["code"], row["metric"] or None, row["severity"],
                              row["confidence"], row["evidence"], row["since"].timestamp())
                for row in past.open])
            if past.readings:
                log.info("engine state rebuilt", device=device_id,
                         readings=len(past.readings), open_diagnoses=len(past.open))

    async def _commit(self, events: list[DiagnosisEvent], progress: dict[str, float]) -> None:
        async with self.pool.acquire() as conn:
            await repository.commit(conn, events, progress)

    async def _until_available(self, attempt: Callable[[], Awaitable[None]]) -> None:
        await db.until_available(attempt, self.health, max_delay=self.retry_max_delay)
