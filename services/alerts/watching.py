"""From `insa:telemetry` and `insa:diagnostics` entries, and the clock, to committed
alert transitions.

Delivery: both streams are at-least-once. A batch is decoded first (a malformed entry
fails the batch before the engine sees it, so the consumer retries entry by entry and
dead-letters the poison), evaluated, and its transitions committed with the progress
of every series it moved, in one transaction; then the consumer acknowledges it. A
redelivered value is at or before its series' progress and is skipped (the late-data
policy), so no transition is made twice. One lock serializes the engine between the
two streams and the timer: each transition is committed before the next is made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog

from services.alerts.metrics import AlertsMetrics
from shared import db
from shared.alerting import store
from shared.alerting.conditions import RateOfChange, WindowStat
from shared.alerting.evaluation import Device, Engine, Transition
from shared.health import Health
from shared.partition import Partition
from shared.streams import StreamMessage, TelemetryEntry, decode_diagnosis, decode_telemetry

log = structlog.get_logger(__name__)
T = TypeVar("T")

# A full batch, or one whose newest entry was added to the stream longer ago than this,
# means the engine is working off a backlog (after an outage or a restart, or a burst of
# old readings). Its timer then runs on the event time it has reached, so silences and
# `for` are judged by the data, as a backtest would, not by how far behind the engine is:
# catching up on an hour of readings must not find every device an hour silent. A batch
# that is neither, or no batch for this long: caught up, wall time again.
BACKLOG_SECONDS = 5.0


class Watcher:
    def __init__(self, engine: Engine, pool: asyncpg.Pool, partition: Partition,
                 metrics: AlertsMetrics, health: Health, *, retry_max_delay: float,
                 on_committed: Callable[[], None], batch: int = 500) -> None:
        self.engine = engine
        self.pool = pool
        self.partition = partition
        self.metrics = metrics
        self.health = health
        self.retry_max_delay = retry_max_delay
        self.on_committed = on_committed
        self.lock = asyncio.Lock()
        self.batch = batch  # the consumer's: a batch this long means more is waiting
        self.backlog_clock: float | None = None  # event time reached; None: caught up
        self.last_batch = 0.0  # time.monotonic() of the last telemetry batch

    # --- start and reloads ---------------------------------------------------------------
    async def load(self) -> None:
        """Rules, devices, progress, open alerts and the newest values, at start."""
        async with self.lock:
            await self._until_available(self._load)

    async def _load(self) -> None:
        async with self.pool.acquire() as conn:
            rules = await store.load_rules(conn)
            devices = await store.load_devices(conn)
            self.engine.progress = await store.load_progress(conn)
            stored = await store.open_alerts(conn)
            latest = await store.latest_values(conn)
        now = time.time()
        for device_id, device in devices.items():
            self.engine.set_device(device_id, device, now)
        # Another replica's devices' alerts are its own to time, re-notify and escalate.
        self.engine.open = {k: a for k, a in stored.items() if self.partition.owns_device(k[1])}
        await self._apply(self.engine.set_rules(rules, now))
        for row in latest:  # silence timers and compared values continue from storage
            self.engine.prime(row["device_id"], row["metric"], [(row["time"].timestamp(),
                                                                 row["value"])])
        log.info("alert engine loaded", rules=len(rules), devices=len(devices),
                 open_alerts=len(self.engine.open))

    async def reload_rules(self) -> None:
        async with self.lock:
            async def reload() -> None:
                async with self.pool.acquire() as conn:
                    rules = await store.load_rules(conn)
                await self._apply(self.engine.set_rules(rules, time.time()))
                self.metrics.rules.set(len(rules))
            await self._until_available(reload)

    async def refresh_devices(self) -> None:
        async with self.pool.acquire() as conn:
            devices = await store.load_devices(conn)
        async with self.lock:
            now = time.time()
            await self._apply([t for device_id, device in devices.items()
                               for t in self.engine.set_device(device_id, device, now)])

    async def reread_alerts(self, alert_ids: list[int]) -> None:
        """A person acknowledged, resolved, shelved or unshelved alerts: take the stored
        rows (a shelf is the row's `shelved_until`: the timer then skips the alert's
        repeats and escalation, and announces it again when the shelf ends)."""
        async with self.lock, self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT rule_id, device_id FROM alerts WHERE id = ANY($1)",
                                    alert_ids)
            keys = {(r["rule_id"], r["device_id"]) for r in rows
                    if self.partition.owns_device(r["device_id"])}
            stored = await store.open_alerts(conn, keys)
        for key in keys:
            self.engine.adopt(key, stored.get(key))

    # --- the streams and the clock -------------------------------------------------------
    async def handle_telemetry(self, messages: list[StreamMessage]) -> None:
        entries = []
        for message in messages:
            try:
                entry = decode_telemetry(message.fields)
            except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"entry {message.id} is not a telemetry entry: {exc}") from exc
            if self.partition.owns_device(entry.device_id):
                entries.append(entry)
        async with self.lock:
            new = sorted({e.device_id for e in entries} - self.engine.devices.keys())
            transitions: list[Transition] = []
            if new:
                transitions += await self._until_available(
                    lambda: self._first_sight(new, entries))
            values = 0
            for entry in entries:
                numbers = {m: float(v) for m, v in entry.metrics.items()
                           if isinstance(v, int | float) and not isinstance(v, bool)}
                values += len(numbers)
                transitions += self._safely(self.engine.observe_reading, entry.device_id,
                                            entry.ts_ms / 1000, numbers)
            await self._apply(transitions)
        self.metrics.values.inc(values)
        if entries:
            self.metrics.behind_seconds.set(max(0.0, time.time() - entries[-1].ts_ms / 1000))
        self._note_backlog(messages, max((e.ts_ms for e in entries), default=None))

    def _note_backlog(self, messages: list[StreamMessage], newest_ms: int | None) -> None:
        self.last_batch = time.monotonic()
        added = int(messages[-1].id.split("-", 1)[0]) / 1000
        if len(messages) < self.batch and time.time() - added <= BACKLOG_SECONDS:
            self.backlog_clock = None
        elif newest_ms is not None:
            self.backlog_clock = max(self.backlog_clock or 0.0, newest_ms / 1000)

    def clock(self) -> float:
        """The timer's now: wall time, or while working off a backlog the event time reached."""
        now = time.time()
        if self.backlog_clock is None or time.monotonic() - self.last_batch > BACKLOG_SECONDS:
            self.backlog_clock = None
            return now
        return min(now, self.backlog_clock)

    async def handle_diagnoses(self, messages: list[StreamMessage]) -> None:
        events: list[tuple[str, float, str, str, str, bool, float, str | None]] = []
        for message in messages:
            try:
                event = decode_diagnosis(message.fields)
                ts = datetime.fromisoformat(str(event["ts"])).timestamp()
                evidence = event.get("evidence") or {}
                superseded_by = evidence.get("superseded_by") if isinstance(evidence, dict) \
                    else None
                events.append((str(event["device_id"]), ts, str(event["code"]),
                               str(event.get("metric") or ""), str(event["severity"]),
                               bool(event["cleared"]), float(event.get("confidence", 1.0)),
                               str(superseded_by) if superseded_by else None))
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"entry {message.id} is not a diagnosis entry: {exc}") from exc
        events = [e for e in events if self.partition.owns_device(e[0])]
        async with self.lock:
            new = sorted({e[0] for e in events} - self.engine.devices.keys())
            transitions: list[Transition] = []
            if new:
                transitions += await self._until_available(lambda: self._first_sight(new, []))
            for diagnosis in events:
                transitions += self._safely(self.engine.observe_diagnosis, *diagnosis)
            await self._apply(transitions)
        self.metrics.diagnoses.inc(len(events))

    async def tick(self) -> None:
        async with self.lock:
            await self._apply(self.engine.tick(self.clock()))
        self.metrics.open_alerts.set(len(self.engine.open))
        self.metrics.late.set(self.engine.late)

    # --- internals -----------------------------------------------------------------------
    def _safely(self, evaluate: Callable[..., list[Transition]], device_id: str,
                *args: Any) -> list[Transition]:
        try:
            return evaluate(device_id, *args)
        except Exception:  # an engine bug must not stop the stream
            self.metrics.errors.inc()
            log.exception("rule evaluation failed", device=device_id)
            return []

    async def _first_sight(self, device_ids: list[str], entries: list[TelemetryEntry]
                          ) -> list[Transition]:
        """A device new to this engine: its scope facts, and its windows from storage."""
        ended: list[Transition] = []
        async with self.pool.acquire() as conn:
            devices = await store.load_devices(conn, device_ids)
            for device_id in device_ids:
                ended += self.engine.set_device(device_id, devices.get(device_id) or Device(),
                                                time.time())
                first = min((e.ts_ms / 1000 for e in entries if e.device_id == device_id),
                            default=None)
                if first is not None:
                    await self._prime_windows(conn, device_id, first, entries)
        return ended

    async def _prime_windows(self, conn: asyncpg.Connection, device_id: str, first: float,
                             entries: list[TelemetryEntry]) -> None:
        metrics = {m for e in entries if e.device_id == device_id for m in e.metrics}
        widest: dict[str, float] = {}
        for metric in metrics:
            for watch in self.engine.watches(device_id, metric):
                condition = self.engine.condition(watch.rule_id, watch.rule, watch.target)
                if isinstance(condition, WindowStat | RateOfChange):
                    widest[metric] = max(widest.get(metric, 0.0), condition.window.seconds)
        if not widest:
            return
        rows = await store.history(conn, device_id, sorted(widest),
                                   first - max(widest.values()), first)
        for metric in widest:
            self.engine.prime(device_id, metric, [(r["time"].timestamp(), r["value"])
                                                  for r in rows if r["metric"] == metric])

    async def _apply(self, transitions: list[Transition]) -> None:
        """Commit transitions with the progress they rest on; adopt what was refused."""
        progress = self.engine.take_progress()
        if not transitions and not progress:
            return
        refused: set[tuple[int, str]] = set()

        async def commit() -> None:
            nonlocal refused
            async with self.pool.acquire() as conn:
                refused = await store.commit(conn, transitions, progress)
                if refused:
                    stored = await store.open_alerts(conn, refused)
                    for key in refused:
                        self.engine.adopt(key, stored.get(key))

        await self._until_available(commit)
        for t in transitions:
            if (t.alert.rule_id, t.alert.device_id) not in refused:
                self.metrics.transitions.labels(t.kind, t.severity).inc()
        self.metrics.refused.inc(len(refused))
        if transitions:
            self.on_committed()

    async def _until_available(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await db.until_available(attempt, self.health, max_delay=self.retry_max_delay)
