"""The ingest pipeline: batch by size and age, commit, stream, then ack.

Order per batch: rows committed in PostgreSQL → entries added to the Redis
stream → QoS 1 acks sent. A failure at any step retries that step (holding
the acks back, which is the backpressure) and never skips it, so a crash at
any point leaves the broker to redeliver; storage is idempotent and the stream
entries are re-added, so nothing is lost (consumers see at-least-once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import asyncpg
import redis.asyncio as redis
import structlog

from services.ingestor import repository
from services.ingestor.batch import Batch, Parsed, Reject
from services.ingestor.flood_guard import FloodGuard
from services.ingestor.metrics import IngestorMetrics
from services.ingestor.mqtt_source import Delivery, MqttSource
from services.ingestor.parsing import MessageParser
from services.ingestor.rejects import RejectLog
from services.ingestor.settings import IngestorSettings
from shared.db import UNAVAILABLE as PG_UNAVAILABLE
from shared.db import is_broken_connection, is_data_error
from shared.health import Health
from shared.redis_client import UNAVAILABLE as REDIS_UNAVAILABLE
from shared.streams import EncodedEntry, TelemetryWriter, encode_telemetry, trim_consumed

log = structlog.get_logger(__name__)
T = TypeVar("T")
A = TypeVar("A")


@dataclass(slots=True)
class Prepared:
    """A batch mapped to ids and rows, ready for one transaction."""

    numbers: list[repository.NumberRow] = field(default_factory=list)
    texts: list[repository.TextRow] = field(default_factory=list)
    latest: dict[tuple[int, int], repository.LatestRow] = field(default_factory=dict)
    # device -> (latest receive time, whether telemetry came after any status in the batch)
    seen: dict[int, tuple[datetime, bool]] = field(default_factory=dict)
    statuses: list[tuple[int, bool, datetime]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    stream: list[EncodedEntry] = field(default_factory=list)


@dataclass(slots=True)
class Committed:
    """A batch whose rows are committed: next, its stream entries, then its acks."""

    items: list[Parsed]
    stream: list[EncodedEntry]
    committed_at: float


class Pipeline:
    def __init__(self, settings: IngestorSettings, pool: asyncpg.Pool, redis_client: redis.Redis,
                 metrics: IngestorMetrics, health: Health,
                 guard: FloodGuard | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis_client
        self.stream = TelemetryWriter(redis_client, settings.stream)
        self.metrics = metrics
        self.health = health
        self.parser = MessageParser(settings) if guard is None else \
            MessageParser(settings, guard.admit, guard.detail)
        self.catalog = repository.Catalog()
        self.reject_log = RejectLog(settings.reject_log_window_seconds)
        self.source: MqttSource | None = None
        self.batch = Batch()
        self.pending = 0  # received, not yet acked
        self.pending_high_water = 0
        self.draining = False
        self.acks_skipped = 0  # committed, but their connection was gone: redelivered later
        self._wake = asyncio.Event()

    # --- intake (called by paho on the event loop for every message) --------------------
    def on_delivery(self, delivery: Delivery) -> None:
        item = self.parser.parse(delivery)
        self.metrics.messages.labels(item.kind).inc()
        if delivery.redelivered:
            self.metrics.redeliveries.inc()
        self.batch.add(item)
        self.pending += 1
        self.metrics.pending.set(self.pending)
        if self.pending > self.pending_high_water:
            self.pending_high_water = self.pending
            self.metrics.pending_high_water.set(self.pending)
        # Stop pulling at the receive window: Mosquitto 2.0.11 releases a whole window per
        # PUBACK instead of one message, so the broker's Receive Maximum cannot be relied on.
        if self.pending >= self.settings.receive_maximum and self.source is not None:
            self.source.pause()
        if len(self.batch) == 1 or len(self.batch) >= self.settings.batch_max_messages:
            self._wake.set()

    # --- flushing: two stages, so batch N+1 commits while batch N is streamed and acked ---
    async def run(self, stop: asyncio.Event) -> None:
        """Flush batches until `stop` is set and everything received has been acked."""
        committed: asyncio.Queue[Committed | None] = asyncio.Queue(maxsize=2)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._stop_intake_on(stop), name="stop-intake")
            group.create_task(self._commit_batches(stop, committed), name="commit")
            group.create_task(self._stream_and_ack(committed), name="stream-and-ack")

    async def _stop_intake_on(self, stop: asyncio.Event) -> None:
        """Draining: take nothing new, so what is held can be committed and acked in time."""
        await stop.wait()
        self.draining = True
        if self.source is not None:
            self.source.pause()

    async def _commit_batches(self, stop: asyncio.Event,
                              out: asyncio.Queue[Committed | None]) -> None:
        max_age = self.settings.batch_max_age_ms / 1000
        max_messages = self.settings.batch_max_messages
        while True:
            if not self.batch:
                if stop.is_set():
                    await out.put(None)
                    return
                await _wait_either(self._wake, stop, timeout=None)
                self._wake.clear()
                continue
            wait = max_age - self.batch.age()
            if len(self.batch) < max_messages and wait > 0 and not stop.is_set():
                await _wait_either(self._wake, stop, timeout=wait)
                self._wake.clear()
                continue
            items = self.batch.take(max_messages)
            started = time.monotonic()
            prepared = await self._retry("postgres", PG_UNAVAILABLE, self._store, items)
            self.metrics.flush_seconds.observe(time.monotonic() - started)
            self.metrics.batch_messages.observe(len(items))
            await out.put(Committed(items, prepared.stream, time.monotonic()))

    async def _stream_and_ack(self, committed: asyncio.Queue[Committed | None]) -> None:
        while (batch := await committed.get()) is not None:
            if batch.stream:
                await self._retry("redis", REDIS_UNAVAILABLE, self._xadd, batch.stream)
            self._ack(batch.items)
            self.metrics.commit_to_ack_seconds.observe(time.monotonic() - batch.committed_at)

    async def _store(self, items: list[Parsed]) -> Prepared:
        """Commit a batch. Only a data error is this batch's fault; anything else (outage,
        timeout, deadlock, disk full, failover) propagates so `_retry` tries again."""
        try:
            async with self.pool.acquire() as conn:
                try:
                    prepared = await self._prepare(conn, items)
                    written = await repository.write_batch(
                        conn, prepared.numbers, prepared.texts, list(prepared.latest.values()),
                        prepared.seen, prepared.statuses, prepared.rejects)
                except BaseException as exc:
                    if is_broken_connection(exc):
                        conn.terminate()  # the pool replaces it on next acquire
                    raise
        except asyncpg.PostgresError as exc:
            if not is_data_error(exc):
                raise
            if len(items) > 1:
                log.error("batch refused by the database; isolating", error=str(exc))
                return await self._store_one_by_one(items)
            # The one message the database refuses is recorded as a reject instead (and if
            # even its reject is refused, that is retried like an outage, never dropped).
            item = items[0]
            if item.reject is not None:
                raise
            reject = self.parser.reject(item.delivery, item.device_id, "storage_error",
                                        f"{type(exc).__name__}: {exc}")
            return await self._store([Parsed(item.delivery, item.device_id, item.received,
                                             item.kind, reject=reject)])
        self._count(prepared, written)
        return prepared

    async def _store_one_by_one(self, items: list[Parsed]) -> Prepared:
        merged = Prepared()
        for item in items:
            merged.stream += (await self._store([item])).stream
        return merged

    async def _prepare(self, conn: asyncpg.Connection, items: list[Parsed]) -> Prepared:
        prepared = Prepared()
        names = {i.device_id for i in items if i.reject is None and i.device_id}
        devices = await self.catalog.resolve_devices(conn, names, self.settings.auto_provision)
        units: dict[str, str | None] = {}
        for item in items:
            for reading in item.readings:
                for value in reading.values:
                    if units.get(value.metric) is None:
                        units[value.metric] = value.unit
        metrics = await self.catalog.resolve_metrics(conn, units) if units else {}
        limited: dict[str | None, list[int]] = {}  # device -> [index in rejects, count]
        for item in items:
            if item.reject is None and item.device_id not in devices:
                item.reject = self.parser.reject(
                    item.delivery, item.device_id, "unknown_device",
                    "device is not registered and auto-provisioning is off")
            if item.reject is not None:
                if item.reject.reason == "rate_limited":  # a flood: one record per device
                    merged = limited.setdefault(item.device_id, [len(prepared.rejects), 0])
                    merged[1] += 1
                    if merged[1] > 1:
                        continue
                prepared.rejects.append(item.reject)
                continue
            assert item.device_id is not None
            device = devices[item.device_id]
            last_seen = prepared.seen.get(device, (item.received, False))[0]
            if item.status is not None:
                prepared.statuses.append((device, item.status.online, item.status.ts))
                if device in prepared.seen:  # a later status outranks earlier telemetry
                    prepared.seen[device] = (last_seen, False)
                continue
            prepared.seen[device] = (max(last_seen, item.received), True)
            for reading in item.readings:
                entry: dict[str, float | str] = {}
                for v in reading.values:
                    metric = metrics[v.metric]
                    if v.number is not None:
                        prepared.numbers.append((reading.ts, device, metric, v.number, v.quality))
                        entry[v.metric] = v.number
                    else:
                        assert v.text is not None
                        prepared.texts.append((reading.ts, device, metric, v.text, v.quality))
                        entry[v.metric] = v.text
                    current = prepared.latest.get((device, metric))
                    if current is None or current[2] < reading.ts:
                        prepared.latest[(device, metric)] = (device, metric, reading.ts,
                                                             v.number, v.text, v.quality)
                prepared.stream.append(encode_telemetry(
                    item.device_id, int(reading.ts.timestamp() * 1000), entry, reading.seq))
        for at, count in limited.values():
            if count > 1:  # a copy: a retried batch is prepared again from the same items
                prepared.rejects[at] = dataclasses.replace(prepared.rejects[at], count=count)
        return prepared

    def _count(self, prepared: Prepared, written: repository.Written) -> None:
        self.metrics.rows.labels("telemetry").inc(written.telemetry_rows)
        self.metrics.rows.labels("telemetry_text").inc(written.text_rows)
        self.metrics.duplicate_rows.inc(written.duplicate_rows)
        for reject in prepared.rejects:
            self.metrics.rejects.labels(reject.reason).inc(reject.count)
            self.reject_log.record(reject)

    async def _xadd(self, entries: list[EncodedEntry]) -> None:
        await self.stream.add(entries)
        self.metrics.stream_entries.inc(len(entries))

    def _ack(self, items: list[Parsed]) -> None:
        assert self.source is not None
        skipped = sum(not self.source.ack(item.delivery) for item in items)
        if skipped:
            self.acks_skipped += skipped
            self.metrics.acks_skipped.inc(skipped)
        self.pending -= len(items)
        self.metrics.pending.set(self.pending)
        if self.pending <= self.settings.receive_maximum // 2 and not self.draining:
            self.source.resume()

    async def _retry(self, dependency: str, unavailable: tuple[type[BaseException], ...],
                     attempt: Callable[[A], Awaitable[T]], arg: A) -> T:
        """Retry while `dependency` is unavailable, holding acks back (backpressure)."""
        delay = 0.1
        failing_since: float | None = None
        while True:
            try:
                result = await attempt(arg)
            except unavailable as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.error("dependency unavailable; holding acks", dependency=dependency,
                              error=f"{type(exc).__name__}: {exc}")
                self.health.failing(dependency, f"{type(exc).__name__}: {exc}")
                self.metrics.backpressure.labels(dependency).set(1)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.retry_max_delay_seconds)
                continue
            if failing_since is not None:
                log.info("dependency back; resuming", dependency=dependency,
                         outage_seconds=round(time.monotonic() - failing_since, 2))
                self.metrics.backpressure.labels(dependency).set(0)
            self.health.ok(dependency)
            return result

    # --- stream trimming ------------------------------------------------------------------
    async def run_stream_trimming(self, stop: asyncio.Event) -> None:
        settings = self.settings
        while not await _wait_either(stop, None, timeout=settings.stream_trim_interval_seconds):
            try:
                trimmed = await trim_consumed(self.redis, settings.stream,
                                              settings.stream_max_len)
            except REDIS_UNAVAILABLE as exc:
                log.warning("stream trim skipped", error=str(exc))
                continue
            self.metrics.stream_trimmed.inc(trimmed.entries - trimmed.unread)
            if trimmed.unread:
                self.metrics.stream_trimmed_unread.inc(trimmed.unread)
                log.error("stream over its length cap: trimmed entries a consumer group "
                          "had not acknowledged", stream=settings.stream,
                          unread=trimmed.unread, max_len=settings.stream_max_len)

    # --- device inactivity --------------------------------------------------------------
    async def run_inactivity_sweeps(self, stop: asyncio.Event) -> None:
        period = min(self.settings.offline_after_seconds / 4, 30.0)
        while not await _wait_either(stop, None, timeout=period):
            try:
                async with self.pool.acquire() as conn:
                    gone = await repository.mark_inactive_offline(
                        conn, self.settings.offline_after_seconds)
            except PG_UNAVAILABLE as exc:
                log.warning("inactivity sweep skipped", error=str(exc))
                continue
            if gone:
                self.metrics.devices_offline.inc(len(gone))
                log.info("devices offline after inactivity", devices=gone[:50], count=len(gone))


async def _wait_either(a: asyncio.Event, b: asyncio.Event | None,
                       timeout: float | None) -> bool:
    """Wait until `a` or `b` is set or the timeout passes; True when one is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (a, b) if e is not None]
    done, pending = await asyncio.wait(waiters, timeout=timeout,
                                       return_when=asyncio.FIRST_COMPLETED)
    for w in pending:
        w.cancel()
    return bool(done)
