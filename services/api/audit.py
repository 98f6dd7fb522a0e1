"""The audit trail (IEC 62443 SR 2.8): every authentication event, permission denial and
change to users, keys, devices, rules and alerts, in `audit_log` (migration 0006).

Bounded in two ways. Refusals by the brute-force limits are not written each: they are
tallied in Redis and reported as one row per limit and source a minute (`reported`), so
a client over its limit cannot grow the table with every request. And rows older than
INSA_API_AUDIT_RETENTION_DAYS are deleted every hour (`prune`)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from services.api.security.ratelimit import FailureLimiter

if TYPE_CHECKING:
    from services.api.deps import Resources

log = structlog.get_logger(__name__)

REPORT_SECONDS = 60.0
PRUNE_SECONDS = 3600.0
PRUNE_BATCH = 10_000


async def record(conn: asyncpg.Connection | asyncpg.Pool, actor: str, action: str,
                 subject: str | None = None, outcome: str = "success",
                 **detail: Any) -> None:
    """One row. Written in the caller's transaction when given a connection, so a change
    and its audit row commit together."""
    await conn.execute("INSERT INTO audit_log (actor, action, subject, outcome, detail) "
                       "VALUES ($1, $2, $3, $4, $5)", actor, action, subject, outcome,
                       {k: v for k, v in detail.items() if v is not None})
    log.info("audit", actor=actor, action=action, subject=subject, outcome=outcome)


async def report_refusals(pool: asyncpg.Pool, limiter: FailureLimiter) -> int:
    """The limits' refusals tallied since the last report, one row each (actor, action
    and subject as the failures' own rows, detail `reason: rate_limited`, `limit`,
    `refused`: how many). Taken from Redis atomically, so replicas never report one
    twice; put back if the database cannot take them."""
    taken = await limiter.take_refusals()
    if not taken:
        return 0
    try:
        async with pool.acquire() as conn, conn.transaction():
            for actor, action, subject, detail, count in taken:
                await record(conn, actor, action, subject, "failure", reason="rate_limited",
                             refused=count, **detail)
    except Exception:
        await limiter.put_back(taken)
        raise
    return len(taken)


async def prune(pool: asyncpg.Pool, days: int, batch: int = PRUNE_BATCH) -> int:
    """Delete rows older than `days` (0: none), a batch per statement so that no
    statement holds many row locks or runs long; returns how many."""
    if days <= 0:
        return 0
    deleted = 0
    while True:
        status = await pool.execute(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log "
            "WHERE at < now() - make_interval(days => $1) LIMIT $2)", days, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted


async def upkeep(res: Resources, stop: asyncio.Event) -> None:
    """A BACKGROUND job: every minute the refusals become rows; at start and then every
    hour the rows past the retention go. Every replica runs it; both halves are safe
    to run at once (the tallies are taken atomically, a row is deleted once)."""
    pruned_at = -PRUNE_SECONDS
    while not stop.is_set():
        try:
            await report_refusals(res.pool, res.limiter)
        except Exception as exc:
            log.warning("refusals not reported yet", error=f"{type(exc).__name__}: {exc}")
        if time.monotonic() - pruned_at >= PRUNE_SECONDS:
            try:
                deleted = await prune(res.pool, res.settings.audit_retention_days)
                pruned_at = time.monotonic()
                if deleted:
                    log.info("audit rows past the retention deleted", rows=deleted,
                             days=res.settings.audit_retention_days)
            except Exception as exc:
                log.warning("audit retention not applied yet",
                            error=f"{type(exc).__name__}: {exc}")
        try:
            await asyncio.wait_for(stop.wait(), REPORT_SECONDS)
        except TimeoutError:
            pass
