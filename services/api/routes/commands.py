"""Commands to devices: recorded, then published QoS 1 on insa/devices/<id>/command as
`{"id", "name", "params", "ts"}`. The device's answers move the command forward and a
command unanswered by `expires_at` times out (services/api/commands.py)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.api import audit
from services.api.deps import Res, require, visible
from services.api.devices import check_size
from services.api.pagination import Page, decode_cursor, encode_cursor
from services.api.security.principal import Principal
from shared.errors import InsaError, NotFound, ValidationFailed
from shared.mqtt import downlink_topic
from shared.timefmt import utc_text

router = APIRouter(tags=["commands"])
Reader = Annotated[Principal, Depends(require("commands:read"))]
Sender = Annotated[Principal, Depends(require("commands:send"))]
PARAMS_MAX_BYTES = 16 * 1024
DEFAULT_LIMIT = 50
COLUMNS = ("id, device_id, name, params, status, result, created_by, created_at, "
           "updated_at, expires_at")


class CommandIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", examples=["restart"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"delay_seconds": 5}],
                                   description=f"At most {PARAMS_MAX_BYTES} bytes of JSON")
    timeout_seconds: float | None = Field(
        None, gt=0, le=86_400, examples=[60],
        description="Unanswered (no done or failed) by then: timed_out. Default: the "
                    "API's INSA_API_COMMAND_TIMEOUT_SECONDS")


class CommandOut(BaseModel):
    id: uuid.UUID
    device_id: str = Field(examples=["W-101"])
    name: str = Field(examples=["restart"])
    params: dict[str, Any]
    status: Literal["pending", "accepted", "done", "failed", "timed_out"]
    result: Any = Field(None, description="As the device answered it")
    created_by: str = Field(examples=["user:ana"])
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


@router.post("/devices/{device_id}/commands", response_model=CommandOut, status_code=202,
             summary="Send a command to a device",
             description="Answered once the broker has the command (pending); follow it "
                         "with GET /commands/{id}. When the broker does not take it, the "
                         "command is recorded failed and the answer is 503.",
             responses={404: {}, 503: {}})
async def send_command(device_id: str, body: CommandIn, res: Res, who: Sender
                       ) -> CommandOut:
    visible(who, device_id)
    check_size("params", body.params, PARAMS_MAX_BYTES)
    timeout = timedelta(seconds=body.timeout_seconds or res.settings.command_timeout_seconds)
    command_id = uuid.uuid4()
    async with res.pool.acquire() as conn, conn.transaction():
        device = await conn.fetchrow("SELECT gateway_id FROM devices WHERE device_id = $1 "
                                     "FOR SHARE", device_id)
        if device is None:
            raise NotFound(f"device {device_id} does not exist")
        row = await conn.fetchrow(
            f"INSERT INTO commands (id, device_id, name, params, created_by, expires_at) "
            f"VALUES ($1, $2, $3, $4, $5, now() + $6::interval) RETURNING {COLUMNS}",
            command_id, device_id, body.name, body.params, who.actor, timeout)
        await audit.record(conn, who.actor, "command.send", device_id,
                           command_id=str(command_id), name=body.name)
    # Published after the commit, so an answer, however quick, finds the command.
    payload = orjson.dumps({"id": str(command_id), "name": body.name, "params": body.params,
                            "ts": utc_text(row["created_at"])})
    try:
        await res.mqtt.publish(downlink_topic(device_id, device["gateway_id"], "command"),
                               payload, timeout=res.settings.publish_timeout_seconds)
    except InsaError as exc:
        async with res.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE commands SET status = 'failed', result = $2, "
                               "updated_at = now() WHERE id = $1 AND status = 'pending'",
                               command_id, {"error": f"not sent: {exc.message}"})
            await audit.record(conn, who.actor, "command.send", device_id, "failure",
                               command_id=str(command_id), error=exc.message)
        raise
    return CommandOut(**dict(row))


@router.get("/devices/{device_id}/commands", response_model=Page[CommandOut],
            summary="List a device's commands", description="Newest first.",
            responses={404: {}})
async def list_commands(
        device_id: str, res: Res, who: Reader,
        status: Literal["pending", "accepted", "done", "failed", "timed_out"] | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1)] = DEFAULT_LIMIT) -> Page[CommandOut]:
    visible(who, device_id)
    if limit > res.settings.page_max:
        raise ValidationFailed("bad_limit", f"limit: at most {res.settings.page_max}",
                               field="limit")
    if await res.pool.fetchval("SELECT 1 FROM devices WHERE device_id = $1",
                               device_id) is None:
        raise NotFound(f"device {device_id} does not exist")
    where: list[str] = ["device_id = $1"]
    args: list[Any] = [device_id]
    if status is not None:
        args.append(status)
        where.append(f"status = ${len(args)}")
    after = decode_cursor(cursor, 2)
    if after is not None:
        try:
            key = (datetime.fromisoformat(str(after[0])), uuid.UUID(str(after[1])))
        except (TypeError, ValueError):
            raise ValidationFailed("bad_cursor", "cursor: not a cursor this endpoint "
                                   "returned", field="cursor") from None
        args.extend(key)
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await res.pool.fetch(f"SELECT {COLUMNS} FROM commands WHERE {' AND '.join(where)} "
                                f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}", *args)
    items = [CommandOut(**dict(r)) for r in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return Page(items=items, next_cursor=encode_cursor(last.created_at.isoformat(),
                                                       str(last.id)) if last else None)


@router.get("/commands/{command_id}", response_model=CommandOut, summary="Get a command",
            responses={404: {}})
async def get_command(command_id: uuid.UUID, res: Res, who: Reader) -> CommandOut:
    row = await res.pool.fetchrow(f"SELECT {COLUMNS} FROM commands WHERE id = $1",
                                  command_id)
    if row is None or not who.sees(row["device_id"]):
        raise NotFound(f"command {command_id} does not exist")
    return CommandOut(**dict(row))
