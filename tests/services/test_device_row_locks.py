"""The ingestor and the alert engine write for the same devices at once without
deadlocking: the ingestor's device-row lock (FOR NO KEY UPDATE, what its UPDATE takes
anyway) does not conflict with the key-share lock of the alerts' foreign keys."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg

from services.alerts import store
from services.alerts.evaluation import OpenAlert, Transition
from services.ingestor.repository import write_batch

DEVICES = 40
SECONDS = 4.0


async def ingest_loop(dsn: str, ids: list[int], until: float, errors: list[str]) -> int:
    """What every ingestor batch does to the device rows: mark all of them seen."""
    conn = await asyncpg.connect(dsn)
    batches = 0
    try:
        while time.monotonic() < until:
            now = datetime.now(UTC)
            try:
                await write_batch(conn, [], [], [], {i: (now, True) for i in ids}, [], [])
            except asyncpg.DeadlockDetectedError as exc:
                errors.append(f"ingestor: {exc}")
            batches += 1
    finally:
        await conn.close()
    return batches


async def alert_loop(dsn: str, rule_id: int, device_ids: list[str], until: float,
                     errors: list[str]) -> int:
    """What the engine does: open alerts for many devices in one transaction (in its own
    order, not the ingestor's), then cancel them."""
    conn = await asyncpg.connect(dsn)
    rounds = 0
    try:
        while time.monotonic() < until:
            now = time.time()
            alerts = [OpenAlert(rule_id, d, "pending", "warning", now, now + 60)
                      for d in reversed(device_ids)]
            try:
                await store.commit(conn, [Transition("pending", a, None, now, 1.0, "warning",
                                                     "m") for a in alerts], {})
                await store.commit(conn, [Transition("cancelled", a, "pending", now, 1.0,
                                                     "warning", "m") for a in alerts], {})
            except asyncpg.DeadlockDetectedError as exc:
                errors.append(f"alerts: {exc}")
            rounds += 1
    finally:
        await conn.close()
    return rounds


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
        ingest_loop(db_url, ids, until, errors), ingest_loop(db_url, ids[::-1], until, errors),
        alert_loop(db_url, rule_id, device_ids, until, errors),
        alert_loop(db_url, rule_id, device_ids[::2], until, errors))
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
