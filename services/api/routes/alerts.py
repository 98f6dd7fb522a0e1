"""Alerts: the list, one alert with its transitions, and the people's side of the
lifecycle (acknowledge, resolve, shelve, unshelve) through shared/alerting/store.py,
which records the actor and note and tells the engines; the engines publish the events
from alert_events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from services.api import audit
from services.api.deps import Res, require, visible
from services.api.pagination import Page
from services.api.routes._keyset import after, check_window, cursor_of
from services.api.security.principal import Principal
from shared.alerting import store
from shared.alerting.evaluation import AlertState
from shared.contract import Severity
from shared.errors import NotFound, ValidationFailed
from shared.timefmt import utc_text

router = APIRouter(prefix="/alerts", tags=["alerts"])
Reader = Annotated[Principal, Depends(require("alerts:read"))]
Manager = Annotated[Principal, Depends(require("alerts:manage"))]
COLUMNS = """a.id, a.rule_id, r.name AS rule, a.device_id, a.state, a.severity, a.value,
             a.threshold, a.message, a.active_since, a.fire_at, a.fired_at,
             a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by,
             a.escalated_at, a.last_notified_at, a.shelved_until, a.shelved_by,
             a.updated_at"""
Manual = Callable[[asyncpg.Connection, int, str, str | None], Awaitable[asyncpg.Record]]
NOTE_MAX = 2000


class Alert(BaseModel):
    id: int
    rule_id: int
    rule: str = Field(examples=["motor hot"])
    device_id: str = Field(examples=["W-7"])
    state: str = Field(examples=["firing"])
    severity: str = Field(examples=["critical"])
    value: float | None = Field(description="The last value that held the condition",
                                examples=[104.2])
    threshold: str | None = Field(examples=["> 100"])
    message: str = Field(examples=["W-7: motor 104.2 degC > 100"])
    active_since: datetime = Field(description="When the condition first held")
    fire_at: datetime = Field(description="active_since + the rule's for")
    fired_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None = Field(examples=["user:ana"])
    resolved_at: datetime | None
    resolved_by: str | None = Field(examples=["engine"])
    escalated_at: datetime | None
    last_notified_at: datetime | None
    shelved_until: datetime | None = Field(
        description="Shelved until then: no re-notify or escalation meanwhile; null when "
                    "not shelved. The engine clears it when the shelf ends")
    shelved_by: str | None = Field(examples=["user:ana"])
    updated_at: datetime


class AlertEvent(BaseModel):
    id: int
    kind: str = Field(examples=["acknowledged"], description="pending, firing, renotify, "
                      "escalated, acknowledged, resolved, shelved or unshelved")
    state: str = Field(description="The alert's state after it")
    severity: str
    at: datetime
    actor: str = Field(examples=["user:ana"], description="engine, or who acted")
    value: float | None
    note: str | None = Field(description="The person's note, or the engine's reason")
    shelved_until: datetime | None = Field(description="A shelved event: the shelf's end")
    published_at: datetime | None = Field(description="When it went out on insa:alerts "
                                                      "and MQTT")


class AlertDetail(Alert):
    events: list[AlertEvent] = Field(description="Its transitions, in order")


class NoteIn(BaseModel):
    note: str | None = Field(None, max_length=NOTE_MAX, examples=["crew on the way"],
                             description="Kept with the event in the alert's history")


class ShelveIn(BaseModel):
    minutes: float | None = Field(None, gt=0, allow_inf_nan=False, examples=[120],
                                  description="Shelve for this long (this or until)")
    until: AwareDatetime | None = Field(None, description="Shelve until then (this or "
                                                          "minutes)")
    note: str | None = Field(None, max_length=NOTE_MAX, examples=["pump swap, W-7 down"],
                             description="Why; kept with the event in the alert's history")


async def _alert(conn: asyncpg.Connection | asyncpg.Pool, who: Principal,
                 alert_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM alerts a JOIN rules r "
                              f"ON r.id = a.rule_id WHERE a.id = $1", alert_id)
    if row is None or not who.sees(row["device_id"]):
        raise NotFound(f"alert {alert_id} does not exist")
    return row


@router.get("", response_model=Page[Alert], summary="List alerts, newest first")
async def list_alerts(
        res: Res, who: Reader,
        state: Annotated[list[AlertState] | None, Query(description="Any of these")] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        device_id: str | None = None, rule_id: int | None = None,
        shelved: Annotated[bool | None, Query(description="Only shelved (true) or only "
                                                          "not shelved (false)")] = None,
        start: Annotated[AwareDatetime | None, Query(description="active_since at or "
                                                                 "after")] = None,
        end: Annotated[AwareDatetime | None, Query(description="active_since before")] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Page[Alert]:
    """By when the condition began; `state=firing&state=acknowledged` is what is open
    and announced."""
    if device_id is not None:
        visible(who, device_id)
    device_id = device_id or who.device_id
    check_window(start, end)
    at, last_id = after(cursor)
    rows = await res.pool.fetch(
        f"""
        SELECT {COLUMNS} FROM alerts a JOIN rules r ON r.id = a.rule_id
        WHERE ($1::text[] IS NULL OR a.state = ANY($1))
          AND ($2::text[] IS NULL OR a.severity = ANY($2))
          AND ($3::text IS NULL OR a.device_id = $3) AND ($4::bigint IS NULL OR a.rule_id = $4)
          AND ($5::timestamptz IS NULL OR a.active_since >= $5)
          AND ($6::timestamptz IS NULL OR a.active_since < $6)
          AND ($7::timestamptz IS NULL OR (a.active_since, a.id) < ($7, $8::bigint))
          AND ($10::boolean IS NULL OR (a.shelved_until IS NOT NULL) = $10)
        ORDER BY a.active_since DESC, a.id DESC LIMIT $9
        """, state, severity, device_id, rule_id, start, end, at, last_id, limit + 1,
        shelved)
    items = [Alert(**dict(r)) for r in rows[:limit]]
    return Page(items=items, next_cursor=cursor_of(items[-1].active_since, items[-1].id)
                if len(rows) > limit else None)


@router.get("/{alert_id}", response_model=AlertDetail, summary="An alert and its events",
            responses={404: {}})
async def get_alert(alert_id: int, res: Res, who: Reader) -> AlertDetail:
    async with res.pool.acquire() as conn:
        row = await _alert(conn, who, alert_id)
        events = await conn.fetch(
            "SELECT id, kind, state, severity, at, actor, value, note, shelved_until, "
            "published_at FROM alert_events WHERE alert_id = $1 ORDER BY id", alert_id)
    return AlertDetail(**dict(row), events=[AlertEvent(**dict(e)) for e in events])


async def _manual(res: Res, who: Principal, alert_id: int, change: Manual, action: str,
                  note: str | None, **detail: Any) -> Alert:
    async with res.pool.acquire() as conn:
        await _alert(conn, who, alert_id)  # 404 for another device's alert
        async with conn.transaction():
            # Raises NotFound, or Conflict when the state does not allow it.
            changed = await change(conn, alert_id, who.actor, note)
            await audit.record(conn, who.actor, action, str(alert_id),
                               device_id=changed["device_id"], rule_id=changed["rule_id"],
                               note=note, **detail)
        return Alert(**dict(await _alert(conn, who, alert_id)))


def shelf_end(body: ShelveIn, low: float, high: float, now: datetime) -> datetime:
    """When the shelf `body` asks for ends: `minutes` from now or `until`, lasting `low`
    to `high` seconds (the API's settings); 422 naming the field otherwise."""
    if (body.minutes is None) == (body.until is None):
        raise ValidationFailed("bad_shelf", "minutes: give minutes or until, one of them",
                               field="minutes")
    if body.until is not None:
        field, seconds = "until", (body.until - now).total_seconds()
    else:
        field, seconds = "minutes", (body.minutes or 0.0) * 60
    if not low <= seconds <= high:  # (checked before a timedelta of it could overflow)
        raise ValidationFailed("bad_shelf", f"{field}: a shelf lasts {low / 60:g} to "
                               f"{high / 60:g} minutes from now", field=field)
    return body.until or now + timedelta(seconds=seconds)


NoteBody = Annotated[NoteIn | None, Body()]
CONFLICT: dict[int | str, dict[str, Any]] = {
    404: {}, 409: {"description": "The alert's state does not allow it"}}


@router.post("/{alert_id}/acknowledge", response_model=Alert, responses=CONFLICT,
             summary="Acknowledge a firing alert")
async def acknowledge_alert(alert_id: int, res: Res, who: Manager,
                            body: NoteBody = None) -> Alert:
    """Someone is on it: the alert stays open (and is no longer re-notified) until its
    condition clears or someone resolves it. Only a firing alert can be acknowledged."""
    return await _manual(res, who, alert_id, store.acknowledge, "alert.acknowledge",
                         body.note if body else None)


@router.post("/{alert_id}/resolve", response_model=Alert, responses=CONFLICT,
             summary="Resolve an open alert")
async def resolve_alert(alert_id: int, res: Res, who: Manager, body: NoteBody = None) -> Alert:
    """Ends the alert now (pending, firing or acknowledged); if its condition still
    holds, the next reading that holds it starts a new one."""
    return await _manual(res, who, alert_id, store.resolve, "alert.resolve",
                         body.note if body else None)


@router.post("/{alert_id}/shelve", response_model=Alert, responses=CONFLICT,
             summary="Shelve a firing or acknowledged alert for a while")
async def shelve_alert(alert_id: int, res: Res, who: Manager, body: ShelveIn) -> Alert:
    """Put a known alert aside: until the shelf ends the engine neither re-notifies nor
    escalates it (its state changes are still recorded and published); then, if it is
    still open, an `unshelved` event announces it again. `minutes` or `until`: by
    default 5 minutes to 7 days (INSA_API_ALERT_SHELF_MIN_SECONDS, …_MAX_SECONDS). A
    shelved alert can be shelved again (the new shelf replaces the old one); a resolve
    ends the shelf."""
    settings = res.settings
    until = shelf_end(body, settings.alert_shelf_min_seconds,
                      settings.alert_shelf_max_seconds, datetime.now(UTC))
    return await _manual(res, who, alert_id, partial(_shelve, until), "alert.shelve",
                         body.note, until=utc_text(until))


async def _shelve(until: datetime, conn: asyncpg.Connection, alert_id: int, actor: str,
                  note: str | None) -> asyncpg.Record:
    return await store.shelve(conn, alert_id, actor, until, note)


@router.post("/{alert_id}/unshelve", response_model=Alert, responses=CONFLICT,
             summary="End an alert's shelf now")
async def unshelve_alert(alert_id: int, res: Res, who: Manager,
                         body: NoteBody = None) -> Alert:
    """As when the shelf runs out: an `unshelved` event announces the alert again, and
    re-notify counts from it. 409 if the alert is not shelved."""
    return await _manual(res, who, alert_id, store.unshelve, "alert.unshelve",
                         body.note if body else None)
