"""Devices: the catalog the ingestor also fills (auto-provisioning), with names, types,
tags and metadata kept by engineers. Creating a device may provision its MQTT account at
once; deleting one deletes its account, its retained config and (by cascade) its keys,
commands, diagnoses and alerts. Credentials and config: routes/provisioning.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.api import audit
from services.api.deps import Res, require, visible
from services.api.devices import (
    ATTRIBUTES,
    COLUMNS,
    DESIRED,
    DEVICE_ID_PATTERN,
    RESERVED_METADATA,
    TAG_PATTERN,
    TAGS,
    Credentials,
    DeviceOut,
    device_out,
    forget,
    locked,
    provision,
    unique,
    user_metadata,
)
from services.api.errors import BROKER_REFUSED
from services.api.pagination import Page, decode_cursor, encode_cursor
from services.api.security.principal import Principal
from shared.equipment import Equipment
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed
from shared.mqtt import downlink_topic
from shared.schemas import check_device_id

router = APIRouter(prefix="/devices", tags=["devices"])
Reader = Annotated[Principal, Depends(require("devices:read"))]
Writer = Annotated[Principal, Depends(require("devices:write"))]
TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Tag = Annotated[str, Field(pattern=TAG_PATTERN, examples=["field=north"])]
Status = Literal["unknown", "online", "offline"]
DEFAULT_LIMIT = 100


class DeviceIn(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN, examples=["W-101"],
                           description="Also its MQTT username; no `insa-` prefix")
    name: str | None = Field(None, max_length=200, examples=["Well 101, pad 3"])
    device_type: str = Field("esp", pattern=TYPE_PATTERN, examples=["esp"])
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     examples=[{"pump_model": "REDA D460N"}])
    attributes: Equipment = Field(default_factory=Equipment, description=(
        "Nameplate and operating data in canonical units (docs/architecture.md, "
        "\"Equipment\"); rules and diagnosis judge the well by them"))
    provision: bool = Field(False, description="Also create its MQTT account and return "
                                               "the password (shown once)")


class NewDevice(DeviceOut):
    credentials: Credentials | None = Field(None, description="With provision: true only")


class DevicePatch(BaseModel):
    name: str | None = Field(None, max_length=200, description="null clears it")
    device_type: str | None = Field(None, pattern=TYPE_PATTERN)
    tags: list[Tag] | None = Field(None, max_length=50, description="Replaces the tags")
    metadata: dict[str, Any] | None = Field(
        None, description="Replaces the device's own metadata (tags, attributes and "
                          "desired config are kept)")
    attributes: Equipment | None = Field(None, description="Replaces the attributes")


@router.get("", response_model=Page[DeviceOut], summary="List devices",
            description="Ordered by device id; filters combine with AND. `q` is a prefix "
                        "of the device id, or (case-insensitive) of its name.")
async def list_devices(
        res: Res, who: Reader,
        device_type: Annotated[str | None, Query(max_length=64)] = None,
        tag: Annotated[str | None, Query(max_length=64)] = None,
        status: Status | None = None,
        q: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1)] = DEFAULT_LIMIT) -> Page[DeviceOut]:
    if limit > res.settings.page_max:
        raise ValidationFailed("bad_limit", f"limit: at most {res.settings.page_max}",
                               field="limit")
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if who.device_id is not None:  # a key scoped to one device lists that one only
        where.append(f"device_id = {arg(who.device_id)}")
    if device_type is not None:
        where.append(f"device_type = {arg(device_type)}")
    if tag is not None:
        where.append(f"metadata->'tags' ? {arg(tag)}")
    if status is not None:
        where.append(f"status = {arg(status)}")
    if q is not None:
        prefix = arg(q)
        where.append(f"(starts_with(device_id, {prefix}) OR "
                     f"starts_with(lower(coalesce(name, '')), lower({prefix})))")
    after = decode_cursor(cursor, 1)
    if after is not None:
        if not isinstance(after[0], str):
            raise ValidationFailed("bad_cursor", "cursor: not a cursor this endpoint "
                                   "returned", field="cursor")
        where.append(f"device_id > {arg(after[0])}")
    sql = (f"SELECT {COLUMNS} FROM devices {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY device_id LIMIT {arg(limit + 1)}")
    rows = await res.pool.fetch(sql, *args)
    items = [device_out(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor(items[-1].device_id) if more else None)


@router.get("/{device_id}", response_model=DeviceOut, summary="Get a device",
            responses={404: {}})
async def get_device(device_id: str, res: Res, who: Reader) -> DeviceOut:
    visible(who, device_id)
    row = await res.pool.fetchrow(f"SELECT {COLUMNS} FROM devices WHERE device_id = $1",
                                  device_id)
    if row is None:
        raise NotFound(f"device {device_id} does not exist")
    return device_out(row)


@router.post("", response_model=NewDevice, status_code=201, summary="Create a device",
             description="With `provision: true` its MQTT account is created too, and its "
                         "password returned this once: both or neither happen.",
             responses={409: {}, **BROKER_REFUSED})
async def create_device(body: DeviceIn, res: Res, who: Writer) -> NewDevice:
    check_device_id(body.device_id)
    if who.device_id is not None:
        raise Forbidden(f"a key scoped to device {who.device_id} may not create devices")
    metadata = {**user_metadata(body.metadata), TAGS: unique(body.tags),
                ATTRIBUTES: body.attributes.known()}
    credentials = None
    async with res.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                f"INSERT INTO devices (device_id, name, device_type, metadata) "
                f"VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}",
                body.device_id, body.name, body.device_type, metadata)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"device {body.device_id} already exists") from None
        await audit.record(conn, who.actor, "device.create", body.device_id,
                           device_type=body.device_type, provision=body.provision)
        if body.provision:  # in the transaction: a broker failure creates nothing
            password, how = await provision(res.broker, body.device_id)
            await audit.record(conn, who.actor, f"device.credentials.{how}", body.device_id)
            credentials = Credentials(username=body.device_id, password=password)
    return NewDevice(**device_out(row).model_dump(), credentials=credentials)


@router.patch("/{device_id}", response_model=DeviceOut, summary="Change a device",
              description="Only the fields given change; `tags` and `metadata` are "
                          "replaced as a whole.", responses={404: {}})
async def update_device(device_id: str, body: DevicePatch, res: Res, who: Writer
                        ) -> DeviceOut:
    visible(who, device_id)
    given = {f for f in body.model_fields_set if f == "name" or getattr(body, f) is not None}
    if not given:
        raise ValidationFailed("empty_patch", "nothing to change: give name, device_type, "
                               "tags, attributes or metadata")
    replaced = user_metadata(body.metadata) if body.metadata is not None else None
    async with res.pool.acquire() as conn, conn.transaction():
        row = await locked(conn, device_id)
        stored = row["metadata"]
        own = {k: v for k, v in stored.items() if k not in RESERVED_METADATA}
        metadata = {**(own if replaced is None else replaced),
                    **{k: stored[k] for k in RESERVED_METADATA if k in stored}}
        if body.tags is not None:
            metadata[TAGS] = unique(body.tags)
        if body.attributes is not None:
            metadata[ATTRIBUTES] = body.attributes.known()
        row = await conn.fetchrow(
            f"UPDATE devices SET name = $2, device_type = $3, metadata = $4, "
            f"updated_at = now() WHERE device_id = $1 RETURNING {COLUMNS}", device_id,
            body.name if "name" in given else row["name"],
            body.device_type or row["device_type"], metadata)
        await audit.record(conn, who.actor, "device.update", device_id, changed=sorted(given))
    return device_out(row)


@router.delete("/{device_id}", status_code=204, summary="Delete a device",
               description="Also deletes its MQTT account (its connection is dropped) and "
                           "clears its retained config; its commands, keys, diagnoses and "
                           "alerts go with it.", responses={404: {}, **BROKER_REFUSED})
async def delete_device(device_id: str, res: Res, who: Writer) -> None:
    visible(who, device_id)
    async with res.pool.acquire() as conn, conn.transaction():
        row = await locked(conn, device_id)
        await conn.execute("DELETE FROM devices WHERE device_id = $1", device_id)
        # In the transaction: when the broker cannot be told, the device stays (503).
        had_account = await forget(res.broker, device_id)
        if DESIRED in row["metadata"]:
            await res.mqtt.publish(downlink_topic(device_id, row["gateway_id"], "config"), b"",
                                   retain=True,
                                     timeout=res.settings.publish_timeout_seconds)
        await audit.record(conn, who.actor, "device.delete", device_id,
                           broker_account=had_account)
