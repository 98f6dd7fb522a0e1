"""One-shot queries against a test database (each opens and closes its own connection)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def fetchrow(dsn: str, query: str, *args: object) -> asyncpg.Record | None:
    rows = await fetch(dsn, query, *args)
    return rows[0] if rows else None


async def fetchval(dsn: str, query: str, *args: object) -> Any:
    row = await fetchrow(dsn, query, *args)
    return row[0] if row is not None else None


async def execute(dsn: str, query: str, *args: object) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.execute(query, *args)
    finally:
        await conn.close()


async def stored_seqs(dsn: str) -> list[int]:
    """The seq of every stored reading (metric `n`, see tests/utils/readings.py)."""
    rows = await fetch(dsn, "SELECT t.value FROM telemetry t JOIN metrics m "
                            "ON m.id = t.metric WHERE m.name = 'n'")
    return [int(r["value"]) for r in rows]


async def count_seqs(dsn: str) -> int:
    try:
        return len(await stored_seqs(dsn))
    except (OSError, asyncpg.PostgresError):
        return -1  # database down for the moment
