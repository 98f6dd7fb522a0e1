"""The audit trail's retention: rows older than INSA_API_AUDIT_RETENTION_DAYS are deleted
(in batches, so no long lock), newer ones kept, and 0 keeps everything."""

from __future__ import annotations

import asyncpg

from services.api.audit import prune
from tests.utils.db import fetch


async def test_rows_past_the_retention_are_deleted_in_batches(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        await pool.execute(
            "INSERT INTO audit_log (at, actor, action, subject) SELECT now() - make_interval("
            "days => d), 'user:ana', 'auth.login', d::text FROM unnest($1::int[]) AS d",
            [400, 366, 366, 300, 31, 29, 0])
        assert await prune(pool, 0) == 0, "0: kept for ever"
        assert await prune(pool, 365, batch=2) == 3
        assert await prune(pool, 30, batch=2) == 2
        rows = await fetch(db_url, "SELECT subject FROM audit_log ORDER BY id")
        assert [r["subject"] for r in rows] == ["29", "0"]
    finally:
        await pool.close()
