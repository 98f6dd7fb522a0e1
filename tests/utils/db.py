"""One-shot queries against a test database (each opens and closes its own connection)."""

from __future__ import annotations

import asyncpg


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def fetchrow(dsn: str, query: str) -> asyncpg.Record | None:
    rows = await fetch(dsn, query)
    return rows[0] if rows else None
