"""The audit trail, for admins and auditors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from services.api.deps import Res, require
from services.api.pagination import Page, after_id, encode_cursor
from services.api.security.principal import Principal

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    outcome: str
    detail: dict[str, Any]


@router.get("", response_model=Page[AuditEntry], summary="Audit entries, newest first")
async def audit_entries(
        res: Res, _: Annotated[Principal, Depends(require("audit:read"))],
        actor: str | None = None, action: str | None = None, subject: str | None = None,
        outcome: str | None = None, since: datetime | None = None,
        until: datetime | None = None, cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        action_prefix: Annotated[str | None, Query(
            max_length=64, description="Actions starting with this, e.g. `device.` or "
                                       "`user.`")] = None) -> Page[AuditEntry]:
    after = after_id(cursor)
    rows = await res.pool.fetch(
        "SELECT * FROM audit_log WHERE ($1::text IS NULL OR actor = $1) "
        "AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR subject = $3) "
        "AND ($4::text IS NULL OR outcome = $4) AND ($5::timestamptz IS NULL OR at >= $5) "
        "AND ($6::timestamptz IS NULL OR at < $6) AND ($7::bigint IS NULL OR id < $7) "
        "AND ($9::text IS NULL OR starts_with(action, $9)) "
        "ORDER BY id DESC LIMIT $8", actor, action, subject, outcome, since, until,
        after, limit + 1, action_prefix)
    items = [AuditEntry(**dict(r)) for r in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id)
                if len(rows) > limit else None)
