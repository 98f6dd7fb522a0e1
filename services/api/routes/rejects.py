"""Messages the ingestor refused (docs/payloads.md, "Rejects"): a device's recent ones
with reason, detail and the start of the payload, and a fleet summary by reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from services.api.deps import Res, require, visible
from services.api.pagination import Page, after_id, encode_cursor
from services.api.security.principal import Principal

router = APIRouter(tags=["rejects"])
Reader = Annotated[Principal, Depends(require("telemetry:read"))]
Since = Annotated[AwareDatetime | None, Query(description="Default: a day ago")]
EXAMPLE_BYTES = 512


class Rejected(BaseModel):
    id: int
    received_at: datetime
    topic: str = Field(examples=["insa/devices/W-101/telemetry"])
    reason: str = Field(examples=["text_for_number"])
    detail: str | None = Field(examples=["flow_rate is a numeric metric; got the text '2500'"])
    payload: str = Field(description=f"The first {EXAMPLE_BYTES} bytes kept of the message, "
                         "as text (undecodable bytes replaced)",
                         examples=['{"flow_rate": "2500"}'])
    payload_size: int = Field(description="The whole message's size in bytes")
    message_count: int = Field(description="Messages this row stands for (more than one "
                               "only for rate_limited)")


class ReasonSummary(BaseModel):
    reason: str = Field(examples=["implausible_value"])
    messages: int
    devices: int = Field(description="Distinct devices (a message whose topic named none "
                         "counts as none)")
    last_at: datetime
    example_device_id: str | None = Field(examples=["W-101"])
    example_detail: str | None = Field(examples=["pip 1e+09 psi is outside its plausible "
                                                 "range [-15, 10000] psi"])


class RejectSummary(BaseModel):
    since: datetime
    reasons: list[ReasonSummary] = Field(description="Most messages first")


def _since(since: datetime | None) -> datetime:
    return since or datetime.now(UTC) - timedelta(days=1)


@router.get("/devices/{device_id}/rejects", response_model=Page[Rejected],
            summary="A device's rejected messages, newest first")
async def device_rejects(device_id: str, res: Res, who: Reader, since: Since = None,
                         reason: str | None = None, cursor: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100
                         ) -> Page[Rejected]:
    """Also for a device id that is not registered (its messages are rejected as
    `unknown_device` when auto-provisioning is off)."""
    visible(who, device_id)
    after = after_id(cursor)
    rows = await res.pool.fetch(
        "SELECT id, received_at, topic, reason, detail, payload, payload_size, message_count "
        "FROM rejected_messages WHERE device_id = $1 AND received_at >= $2 "
        "AND ($3::text IS NULL OR reason = $3) AND ($4::bigint IS NULL OR id < $4) "
        "ORDER BY id DESC LIMIT $5", device_id, _since(since), reason,
        after, limit + 1)
    items = [Rejected(**{**dict(r), "payload": bytes(r["payload"] or b"")[:EXAMPLE_BYTES]
                         .decode(errors="replace")}) for r in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id)
                if len(rows) > limit else None)


@router.get("/rejects/summary", response_model=RejectSummary,
            summary="Rejected messages across the fleet, by reason")
async def summary(res: Res, who: Reader, since: Since = None) -> RejectSummary:
    """Per reason: messages, devices, the latest time and its latest example. A key scoped
    to one device sees its own."""
    start = _since(since)
    rows = await res.pool.fetch(
        """
        SELECT reason, sum(message_count)::bigint AS messages,
               count(DISTINCT device_id) AS devices, max(received_at) AS last_at,
               (array_agg(device_id ORDER BY id DESC))[1] AS example_device_id,
               (array_agg(detail ORDER BY id DESC))[1] AS example_detail
          FROM rejected_messages
         WHERE received_at >= $1 AND ($2::text IS NULL OR device_id = $2)
         GROUP BY reason ORDER BY messages DESC, reason
        """, start, who.device_id)
    return RejectSummary(since=start, reasons=[ReasonSummary(**dict(r)) for r in rows])
