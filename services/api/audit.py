"""The audit trail (IEC 62443 SR 2.8): every authentication event, permission denial and
change to users, keys, devices, rules and alerts, in `audit_log` (migration 0006)."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)


async def record(conn: asyncpg.Connection | asyncpg.Pool, actor: str, action: str,
                 subject: str | None = None, outcome: str = "success",
                 **detail: Any) -> None:
    """One row. Written in the caller's transaction when given a connection, so a change
    and its audit row commit together."""
    await conn.execute("INSERT INTO audit_log (actor, action, subject, outcome, detail) "
                       "VALUES ($1, $2, $3, $4, $5)", actor, action, subject, outcome,
                       {k: v for k, v in detail.items() if v is not None})
    log.info("audit", actor=actor, action=action, subject=subject, outcome=outcome)
