"""The ingest pipeline: batch by size and age, commit, stream, then ack.

Order per batch: rows committed in PostgreSQL → entries added to the Redis stream → QoS 1
acks sent. Several batches may be committing at once (`commits_in_flight`); they are
streamed and acked in the order they were taken. A failure at any step retries that step
(holding the acks back, which is the backpressure) and never skips it, so a crash at any
point leaves the broker to redeliver; storage is idempotent and the stream entries are
re-added, so nothing is lost (consumers see at-least-once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import asyncpg
import redis.asyncio as redis
import structlog

from services.ingestor import gateways, repository
from services.ingestor.batch import Batch, Parsed, Reject
from services.ingestor.flow_control import FlowControl
from services.ingestor.intake import Intake, Pausable, WithPaused
from services.ingestor.metrics import IngestorMetrics
from services.ingestor.parsing import MessageParser
from services.ingestor.rejects import RejectLog
from services.ingestor.rows import (
    BatchRows,
    catalog_firsts,
    devices_named,
    map_batch,
)
from services.ingestor.settings import IngestorSettings
from shared import db, redis_client
from shared.health import Health
from shared.lifecycle import wait_any
from shared.mqtt_connection import Message
from shared.retry import retry_until_available
from shared.streams import EncodedEntry, TelemetryWriter

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class Committed:
    """A batch whose rows are committed: next, its stream entries, then its acks."""

    items: list[Parsed]
    stream: list[EncodedEntry]
    committed_at: float


class Pipeline:
    def __init__(self, settings: IngestorSettings, pool: asyncpg.Pool, redis_conn: redis.Redis,
                 metrics: IngestorMetrics, health: Health, parser: MessageParser,
                 intake: Intake) -> None:
        self.settings = settings
        self.pool = pool
        self.stream = TelemetryWriter(redis_conn, settings.stream)
        self.metrics = metrics
        self.health = health
        self.parser = parser
        self.intake = intake
        self.flow = FlowControl(settings.receive_maximum, intake, metrics)
        self.catalog = repository.Catalog()
        self.bounds = settings.plausible()
        self.device_units = repository.DeviceUnits()
        self.reject_log = RejectLog(settings.reject_log_window_seconds)
        self.batch = Batch()
        self.acks_skipped = 0  # committed, but their connection was gone: redelivered later
        self._wake = asyncio.Event()
        # Messages received by kind since the last batch was taken: counted into
        # `metrics.messages` per batch (a Counter.inc per message took a lock, 3 % of the CPU).
        self._received: dict[str, int] = {}
        # Set once the batch taken last has mapped without changing units, or committed:
        # the next one maps only then (`_commit`), so it converts with those units.
        self._settled = asyncio.Event()
        self._settled.set()
        self._mapping = asyncio.Lock()  # one batch maps at a time (the catalog's caches)

    # --- intake (called on the event loop for every message) ----------------------------
    def on_delivery(self, delivery: Message) -> None:
        item = self.parser.parse(delivery)
        if delivery.redelivered:
            self.metrics.redeliveries.inc()
        self.submit(item)

    def pause_with_intake(self, other: Pausable) -> None:
        """`other` (a connection feeding `submit`) pauses and resumes with the intake."""
        self.flow.intake = WithPaused(self.flow.intake, other)

    def submit(self, item: Parsed) -> None:
        """Add an item parsed elsewhere (the Sparkplug host's; acked on its own
        connection, so its delivery is QoS 0 here)."""
        self._received[item.kind] = self._received.get(item.kind, 0) + 1
        self.batch.add(item)
        self.flow.received()
        held = len(self.batch.items)
        if held == 1 or held >= self.settings.batch_max_messages:
            self._wake.set()

    # --- flushing: commits overlap (commits_in_flight), each streamed and acked in order --
    async def run(self, stop: asyncio.Event) -> None:
        """Flush batches until `stop` is set and everything received has been acked."""
        commits: asyncio.Queue[asyncio.Task[Committed] | None] = asyncio.Queue(
            maxsize=self.settings.commits_in_flight)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._stop_intake_on(stop), name="stop-intake")
            group.create_task(self._commit_batches(stop, group, commits), name="commit")
            group.create_task(self._stream_and_ack(commits), name="stream-and-ack")

    async def _stop_intake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.flow.drain()

    async def _commit_batches(self, stop: asyncio.Event, group: asyncio.TaskGroup,
                              out: asyncio.Queue[asyncio.Task[Committed] | None]) -> None:
        max_age = self.settings.batch_max_age_ms / 1000
        max_messages = self.settings.batch_max_messages
        slots = asyncio.Semaphore(self.settings.commits_in_flight)
        while True:
            if not self.batch:
                if stop.is_set():
                    await out.put(None)
                    return
                await wait_any(self._wake, stop)
                self._wake.clear()
                continue
            wait = max_age - self.batch.age()
            if len(self.batch) < max_messages and wait > 0 and not stop.is_set():
                await wait_any(self._wake, stop, timeout=wait)
                self._wake.clear()
                continue
            await slots.acquire()
            self._count_received()  # here: every message taken has been counted
            # Taken once a slot is free: what arrives meanwhile still joins this batch.
            before, self._settled = self._settled, asyncio.Event()
            task = group.create_task(
                self._commit(self.batch.take(max_messages), before, self._settled),
                name="commit-batch")
            task.add_done_callback(lambda _t: slots.release())
            await out.put(task)

    async def _commit(self, items: list[Parsed], before: asyncio.Event,
                      settled: asyncio.Event) -> Committed:
        """Map once the batch before has settled (in the order taken), then write; retried
        until committed. `settled` is set as soon as the next batch may map."""
        await before.wait()
        started = time.monotonic()
        # Wider than db.is_transient: a data error that escaped `_store`'s isolation (the
        # database refused even a reject record) is waited out too, never dropped.
        rows = await self._until_available("postgres", db.is_database_error,
                                           partial(self._store, items, settled))
        settled.set()
        self.metrics.flush_seconds.observe(time.monotonic() - started)
        self.metrics.batch_messages.observe(len(items))
        return Committed(items, rows.stream, time.monotonic())

    async def _stream_and_ack(
            self, commits: asyncio.Queue[asyncio.Task[Committed] | None]) -> None:
        while (commit := await commits.get()) is not None:
            batch = await commit  # in the order taken: a device's entries stay in order
            if batch.stream:
                await self._until_available("redis", redis_client.is_transient,
                                            partial(self._xadd, batch.stream))
            self._ack(batch.items)
            self.metrics.commit_to_ack_seconds.observe(time.monotonic() - batch.committed_at)

    async def _store(self, items: list[Parsed], settled: asyncio.Event | None = None
                     ) -> BatchRows:
        """Commit a batch. Only a data error is this batch's fault; anything else (outage,
        timeout, deadlock, disk full, failover) propagates to be retried."""
        try:
            async with self.pool.acquire() as conn:
                try:
                    async with self._mapping:
                        rows = await self._map(conn, items)
                    if settled is not None and not rows.units:
                        settled.set()  # the next batch maps with the units it would
                    written = await repository.write_batch(
                        conn, numbers=rows.numbers, texts=rows.texts,
                        latest=rows.latest_rows(), seen=rows.seen,
                        statuses=rows.statuses, rejects=rows.rejects,
                        units=rows.unit_rows())
                    self.device_units.remember(rows.units)  # committed
                except BaseException as exc:
                    if db.is_broken_connection(exc):
                        conn.terminate()  # the pool replaces it on next acquire
                    raise
        except asyncpg.PostgresError as exc:
            if not db.is_data_error(exc):
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
                                             kind=item.kind, reject=reject)])
        self._count(rows, written)
        return rows

    async def _store_one_by_one(self, items: list[Parsed]) -> BatchRows:
        merged = BatchRows()
        for item in items:
            merged.stream += (await self._store([item])).stream
        return merged

    async def _map(self, conn: asyncpg.Connection, items: list[Parsed]) -> BatchRows:
        items = await gateways.expand(conn, items, self._reject)
        names = devices_named(items)
        devices = await self.catalog.resolve_devices(conn, names, self.settings.auto_provision)
        units, kinds = catalog_firsts(items)
        metrics = await self.catalog.resolve_metrics(conn, units, kinds) if units else {}
        # Each device's units, read once per device (the first batch that holds it).
        known = await self.device_units.load(conn, [devices[n] for n in names if n in devices])
        return map_batch(items, devices, metrics, self._reject, units=known,
                         kinds=self.catalog.kinds, bounds=self.bounds)

    def _count_received(self) -> None:
        for kind, count in self._received.items():
            self.metrics.messages.labels(kind).inc(count)
        self._received.clear()

    def _reject(self, item: Parsed, reason: str, detail: str) -> Reject:
        return self.parser.reject(item.delivery, item.device_id, reason, detail)

    def _count(self, rows: BatchRows, written: repository.Written) -> None:
        self.metrics.rows.labels("telemetry").inc(written.telemetry_rows)
        self.metrics.rows.labels("telemetry_text").inc(written.text_rows)
        self.metrics.duplicate_rows.inc(written.duplicate_rows)
        for reject in rows.rejects:
            self.metrics.rejects.labels(reject.reason).inc(reject.count)
            self.reject_log.record(reject)

    async def _xadd(self, entries: list[EncodedEntry]) -> None:
        await self.stream.add(entries)
        self.metrics.stream_entries.inc(len(entries))

    def _ack(self, items: list[Parsed]) -> None:
        skipped = self.intake.ack_all([item.delivery for item in items])
        if skipped:
            self.acks_skipped += skipped
            self.metrics.acks_skipped.inc(skipped)
        self.flow.settled(len(items))

    async def _until_available(self, dependency: str,
                               transient: Callable[[BaseException], bool],
                               attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry while `dependency` is unavailable, holding acks back (backpressure)."""

        def failing(exc: BaseException) -> None:
            self.health.failing(dependency, f"{type(exc).__name__}: {exc}")
            self.metrics.backpressure.labels(dependency).set(1)

        result = await retry_until_available(
            attempt, transient=transient, what=dependency,
            max_delay=self.settings.retry_max_delay_seconds, on_failure=failing,
            on_recovery=lambda _s: self.metrics.backpressure.labels(dependency).set(0))
        self.health.ok(dependency)
        return result
