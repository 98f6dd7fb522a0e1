"""API keys for machines and devices, managed by admins: shown once, stored hashed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, model_validator

from services.api import audit
from services.api.deps import Res, require
from services.api.devices import DEVICE_ID_PATTERN
from services.api.security import keys
from services.api.security.principal import Principal
from shared.errors import NotFound, ValidationFailed

router = APIRouter(prefix="/api-keys", tags=["api keys"])
Admin = Annotated[Principal, Depends(require("keys:manage"))]


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, examples=["historian-export"])
    role: Literal["admin", "engineer", "operator", "viewer", "device"] = \
        Field(examples=["viewer"])
    device_id: str | None = Field(None, pattern=DEVICE_ID_PATTERN,
                                  description="Required for role device; for other roles "
                                              "it limits the key to that device's data")
    expires_at: datetime | None = None

    @model_validator(mode="after")
    def _device(self) -> KeyIn:
        if self.role == "device" and self.device_id is None:
            raise ValueError("a device key needs device_id")
        return self


class KeyOut(BaseModel):
    id: int
    prefix: str
    name: str
    role: str
    device_id: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str
    created_at: datetime
    last_used_at: datetime | None


class NewKey(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


@router.get("", response_model=list[KeyOut], summary="List API keys (never the keys)")
async def list_keys(res: Res, _: Admin) -> list[KeyOut]:
    rows = await res.pool.fetch(f"SELECT {keys.COLUMNS} FROM api_keys ORDER BY id")
    return [KeyOut(**dict(r)) for r in rows]


@router.post("", response_model=NewKey, status_code=201, summary="Create an API key",
             responses={422: {}})
async def create_key(body: KeyIn, res: Res, who: Admin) -> NewKey:
    async with res.pool.acquire() as conn, conn.transaction():
        try:
            key, row = await keys.create(conn, body.name, body.role, body.device_id,
                                         body.expires_at, who.actor)
        except asyncpg.ForeignKeyViolationError:
            raise ValidationFailed("unknown_device", f"device_id: {body.device_id} does not "
                                   "exist", field="device_id") from None
        await audit.record(conn, who.actor, "api_key.create", row["prefix"], name=body.name,
                           role=body.role, device_id=body.device_id)
    return NewKey(**row, key=key)


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key", responses={404: {}})
async def revoke_key(key_id: int, res: Res, who: Admin) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        prefix = await conn.fetchval(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
            "RETURNING prefix", key_id)
        if prefix is None:
            raise NotFound(f"API key {key_id} does not exist")
        await audit.record(conn, who.actor, "api_key.revoke", prefix)
