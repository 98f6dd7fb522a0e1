"""The store-and-forward buffer: readings in SQLite until the broker has them.

- A reading is committed (WAL, `synchronous=FULL`: the commit is fsync'd) before its
  source takes the next one, and deleted only once the broker has acknowledged the
  message that carried it (PUBACK): it survives a broker outage, and a restart or a
  crash of the program.
- A reading is kept once per (device, metric, ts): the same sample taken again (an OPC
  UA subscription re-sending a node's current value after a reconnect) is ignored while
  the first is still here. The platform keys stored readings the same way, so one that
  reaches it twice is stored once.
- Bounded at `max_readings`: when full, the oldest readings are dropped to make room for
  the new ones, and counted (`dropped`, kept across restarts). The newest data is what
  an operator acts on, and a site that is cut off for longer than the buffer holds has
  lost the oldest part of the outage either way.
- The points that yield no value (rejects) are kept here too, for the status page.

sqlite3 blocks, so every call runs on one thread of its own, in order.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from services.edge.readings import Reading, Reject

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, metric TEXT NOT NULL, ts_us INTEGER NOT NULL,
    value TEXT NOT NULL,  -- JSON, so a bool stays a bool and a number a number
    unit TEXT,
    UNIQUE (device, metric, ts_us));
CREATE TABLE IF NOT EXISTS rejects (
    device TEXT NOT NULL, metric TEXT NOT NULL, source TEXT NOT NULL, point TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL,
    first_at REAL NOT NULL, last_at REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (device, metric));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A buffered reading and its row id (what is deleted once the broker has it)."""

    id: int
    reading: Reading


class Buffer:
    def __init__(self, path: Path, max_readings: int,
                 on_dropped: Callable[[int], None] = lambda _n: None) -> None:
        self.path = path
        self.max_readings = max_readings
        self.on_dropped = on_dropped
        self.depth = 0  # readings held
        self.dropped = 0  # readings dropped oldest-first because the buffer was full
        self.added = asyncio.Event()  # set when readings arrive: the publisher waits on it
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-buffer")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path, max_readings: int,
                   on_dropped: Callable[[int], None] = lambda _n: None) -> Buffer:
        buffer = cls(path, max_readings, on_dropped)
        await buffer._call(buffer._open)
        return buffer

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # --- readings -------------------------------------------------------------------------
    async def add(self, readings: Sequence[Reading]) -> int:
        """Commit readings (fsync'd) and return how many were new; drops the oldest when
        full. Returns once they are on disk."""
        if not readings:
            return 0
        added, dropped = await self._call(self._add, readings)
        if dropped:
            self.on_dropped(dropped)
        if added:
            self.added.set()
        return added

    async def oldest(self, limit: int) -> list[Stored]:
        return await self._call(self._oldest, limit)

    async def remove(self, ids: Iterable[int]) -> None:
        """Forget readings the broker has acknowledged."""
        await self._call(self._remove, list(ids))

    # --- rejects --------------------------------------------------------------------------
    async def record_reject(self, reject: Reject) -> None:
        await self._call(self._record_reject, reject, time.time())

    async def clear_reject(self, device: str, metric: str) -> None:
        await self._call(self._write, "DELETE FROM rejects WHERE device = ? AND metric = ?",
                         (device, metric))

    async def keep_rejects_of(self, points: set[tuple[str, str]]) -> None:
        """Forget the rejects of points no longer in the mapping file."""
        for device, metric in {(r["device"], r["metric"]) for r in await self.rejects()} \
                - points:
            await self.clear_reject(device, metric)

    async def rejects(self) -> list[dict[str, Any]]:
        return await self._call(self._rejects)

    # --- on the buffer's thread -----------------------------------------------------------
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)  # transactions by hand
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # WAL + FULL: each commit is fsync'd
        db.executescript(SCHEMA)
        self._db = db
        self.depth = db.execute("SELECT count(*) FROM readings").fetchone()[0]
        row = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        self.dropped = row[0] if row else 0

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "buffer not open"
        return self._db

    def _add(self, readings: Sequence[Reading]) -> tuple[int, int]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO readings (device, metric, ts_us, value, unit) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.device, r.metric, r.ts_us, orjson.dumps(r.value).decode(), r.unit)
                 for r in readings])
            added = db.total_changes - before
            over = max(0, self.depth + added - self.max_readings)
            if over:
                db.execute("DELETE FROM readings WHERE id IN "
                           "(SELECT id FROM readings ORDER BY id LIMIT ?)", (over,))
                db.execute("INSERT INTO counters VALUES ('dropped', ?) ON CONFLICT (name) "
                           "DO UPDATE SET value = value + excluded.value", (over,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.depth += added - over
        self.dropped += over
        return added, over

    def _oldest(self, limit: int) -> list[Stored]:
        rows = self.db.execute(
            "SELECT id, device, metric, ts_us, value, unit FROM readings ORDER BY id LIMIT ?",
            (limit,)).fetchall()
        return [Stored(row[0], Reading(row[1], row[2], row[3], orjson.loads(row[4]), row[5]))
                for row in rows]

    def _remove(self, ids: list[int]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            db.executemany("DELETE FROM readings WHERE id = ?", [(i,) for i in ids])
            removed = db.total_changes - before  # fewer if some were dropped meanwhile
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.depth -= removed

    def _record_reject(self, reject: Reject, now: float) -> None:
        self._write(
            "INSERT INTO rejects VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) "
            "ON CONFLICT (device, metric) DO UPDATE SET source = excluded.source, "
            "point = excluded.point, reason = excluded.reason, detail = excluded.detail, "
            "last_at = excluded.last_at, attempts = attempts + 1",
            (reject.device, reject.metric, reject.source, reject.point, reject.reason,
             reject.detail, now, now))

    def _write(self, statement: str, params: tuple[Any, ...]) -> None:
        self.db.execute(statement, params)  # autocommit: one fsync'd transaction

    def _rejects(self) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT source, point, device, metric, reason, detail, first_at, last_at, "
            "attempts FROM rejects ORDER BY source, device, metric")
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
