"""The ingestor and the alert engine write for the same devices at once without
deadlocking: the ingestor's device-row lock (FOR NO KEY UPDATE, what its UPDATE takes
anyway) does not conflict with the key-share lock of the alerts' foreign keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from services.ingestor.repository import write_batch
from shared.alerting import store
from shared.alerting.evaluation import OpenAlert, Transition

DEVICES = 40
SECONDS = 4.0


async def repeat(dsn: str, who: str, step: Callable[[asyncpg.Connection], Awaitable[None]],
                 until: float, errors: list[str]) -> int:
    """Run `step` on one connection until `until`, noting every deadlock; returns rounds."""
    conn = await asyncpg.connect(dsn)
    rounds = 0
    try:
        while time.monotonic() < until:
            try:
                await step(conn)
            except asyncpg.DeadlockDetectedError as exc:
                errors.append(f"{who}: {exc}")
            rounds += 1
    finally:
        await conn.close()
    return rounds


def ingest(ids: list[int]) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """What every ingestor batch does to the device rows: mark all of them seen."""
    async def step(conn: asyncpg.Connection) -> None:
        now = datetime.now(UTC)
        await write_batch(conn, [], [], [], {i: (now, True) for i in ids}, [], [])
    return step


def raise_alerts(rule_id: int, device_ids: list[str]
                 ) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """What the engine does: open alerts for many devices in one transaction (in its own
    order, not the ingestor's), then cancel them."""
    async def step(conn: asyncpg.Connection) -> None:
        now = time.time()
        alerts = [OpenAlert(rule_id, d, "pending", "warning", now, now + 60)
                  for d in reversed(device_ids)]
        await store.commit(conn, [Transition("pending", a, None, now, 1.0, "warning", "m")
                                  for a in alerts], {})
        await store.commit(conn, [Transition("cancelled", a, "pending", now, 1.0, "warning",
                                             "m") for a in alerts], {})
    return step


async def test_ingestor_and_alert_engine_never_deadlock_on_device_rows(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        device_ids = [f"W-{i:03d}" for i in range(DEVICES)]
        ids = [r["id"] for r in await conn.fetch(
            "INSERT INTO devices (device_id) SELECT unnest($1::text[]) RETURNING id",
            device_ids)]
        rule_id = await conn.fetchval(
            "INSERT INTO rules (name, definition) VALUES ('hot', '{}') RETURNING id")
        name = await conn.fetchval("SELECT current_database()")
        before = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", name)
    finally:
        await conn.close()
    errors: list[str] = []
    until = time.monotonic() + SECONDS
    counts = await asyncio.gather(
        repeat(db_url, "ingestor", ingest(ids), until, errors),
        repeat(db_url, "ingestor", ingest(ids[::-1]), until, errors),
        repeat(db_url, "alerts", raise_alerts(rule_id, device_ids), until, errors),
        repeat(db_url, "alerts", raise_alerts(rule_id, device_ids[::2]), until, errors))
    assert errors == []
    assert min(counts) > 10, counts  # both sides really ran, many times over
    # The backends that would have detected one report it when they end.
    conn = await asyncpg.connect(db_url)
    try:
        await asyncio.sleep(1.5)
        after = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", name)
    finally:
        await conn.close()
    assert after - before == 0
