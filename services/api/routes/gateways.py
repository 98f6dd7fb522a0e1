"""Gateways: one broker account that publishes for many child devices (docs/payloads.md,
"Gateways"). Engineers register a gateway, provision its account (credentials shown
once), and assign its devices; the ingestor takes a child's data from that gateway only
while the device is assigned to it. A child's commands and desired config go through its
gateway's tree, so assigning or unassigning a device moves its retained config there."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.api import audit
from services.api.deps import Res, Resources, require
from services.api.devices import (
    DESIRED,
    DEVICE_ID_PATTERN,
    METADATA_MAX_BYTES,
    Credentials,
    check_size,
    forget_account,
    provision_account,
)
from services.api.errors import BROKER_REFUSED
from services.api.security.principal import Principal
from shared.broker_accounts import gateway_role_name, sparkplug_node_ids
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.mqtt import downlink_topic
from shared.schemas import check_device_id

router = APIRouter(prefix="/gateways", tags=["gateways"])
Reader = Annotated[Principal, Depends(require("gateways:read"))]
Writer = Annotated[Principal, Depends(require("gateways:write"))]
COLUMNS = ("g.gateway_id, g.name, g.protocol, g.auto_register, g.metadata, g.status, "
           "g.status_changed_at, g.created_at, g.updated_at, "
           "(SELECT count(*) FROM devices d WHERE d.gateway_id = g.gateway_id) AS devices")
ASSIGN_MAX = 1000
Protocol = Literal["json", "sparkplug"]


class GatewayIn(BaseModel):
    gateway_id: str = Field(pattern=DEVICE_ID_PATTERN, examples=["rtu-pad-3"],
                            description="Also its MQTT username and client id; no `insa-` "
                                        "prefix, and not a device's account")
    name: str | None = Field(None, max_length=200, examples=["Pad 3 RTU"])
    protocol: Protocol = Field("json", description=(
        "json: the platform's gateway topics; sparkplug: a Sparkplug B edge node, whose id "
        "is `<group>:<edge node>` (docs/payloads.md, \"Sparkplug B\")"))
    auto_register: bool = Field(False, description="Register a device it publishes for that "
                                "the platform does not know, assigned to it")
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"vendor": "ABB"}])
    provision: bool = Field(False, description="Also create its MQTT account and return "
                                               "the password (shown once)")


class GatewayPatch(BaseModel):
    name: str | None = Field(None, max_length=200, description="null clears it")
    auto_register: bool | None = None
    metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata")


class GatewayOut(BaseModel):
    gateway_id: str
    name: str | None
    protocol: Protocol
    auto_register: bool
    metadata: dict[str, Any]
    status: Literal["unknown", "online", "offline"]
    status_changed_at: datetime | None
    devices: int = Field(description="Devices assigned to it")
    created_at: datetime
    updated_at: datetime


class NewGateway(GatewayOut):
    credentials: Credentials | None = Field(None, description="With provision: true only")


class Assignment(BaseModel):
    device_ids: list[str] = Field(min_length=1, max_length=ASSIGN_MAX,
                                  examples=[["W-101", "W-102"]])


class Children(BaseModel):
    device_ids: list[str]
    next_cursor: str | None = Field(description="Pass as `after` for the next page")


async def _locked(conn: asyncpg.Connection, gateway_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM gateways g WHERE gateway_id = $1 "
                              "FOR UPDATE OF g", gateway_id)
    if row is None:
        raise NotFound(f"gateway {gateway_id} does not exist")
    return row


def _out(row: asyncpg.Record) -> GatewayOut:
    return GatewayOut(**dict(row))


async def _provision(res: Resources, gateway_id: str, protocol: str) -> tuple[str, str]:
    return await provision_account(
        res.broker, gateway_id, gateway_role_name(gateway_id),
        lambda name: res.broker.create_gateway(name, sparkplug=protocol == "sparkplug"))


async def _move_config(res: Resources, device: asyncpg.Record, to: str | None) -> None:
    """Its retained desired config, from where the device heard it to where it will."""
    desired = device["metadata"].get(DESIRED)
    if desired is None or device["gateway_id"] == to:
        return
    timeout = res.settings.publish_timeout_seconds
    device_id = device["device_id"]
    await res.mqtt.publish(downlink_topic(device_id, to, "config"), orjson.dumps(
        {"version": desired["version"], "ts": desired["updated_at"],
         "config": desired["config"]}), retain=True, timeout=timeout)
    await res.mqtt.publish(downlink_topic(device_id, device["gateway_id"], "config"), b"",
                           retain=True, timeout=timeout)


@router.post("", response_model=NewGateway, status_code=201, summary="Register a gateway",
             responses={409: {}, **BROKER_REFUSED})
async def create_gateway(body: GatewayIn, res: Res, who: Writer) -> NewGateway:
    check_device_id(body.gateway_id)  # not a reserved name
    check_size("metadata", body.metadata, METADATA_MAX_BYTES)
    if body.protocol == "sparkplug":
        try:
            sparkplug_node_ids(body.gateway_id)
        except ValueError as exc:
            raise ValidationFailed("bad_gateway_id", str(exc), field="gateway_id") from None
    async with res.pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute("INSERT INTO gateways (gateway_id, name, protocol, "
                               "auto_register, metadata) VALUES ($1, $2, $3, $4, $5)",
                               body.gateway_id, body.name, body.protocol, body.auto_register,
                               body.metadata)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"gateway {body.gateway_id} already exists") from None
        credentials = None
        if body.provision:  # in the transaction: a refused account leaves no gateway
            password, how = await _provision(res, body.gateway_id, body.protocol)
            credentials = Credentials(username=body.gateway_id, password=password)
            await audit.record(conn, who.actor, f"gateway.credentials.{how}", body.gateway_id)
        await audit.record(conn, who.actor, "gateway.create", body.gateway_id,
                           auto_register=body.auto_register)
        row = await _locked(conn, body.gateway_id)
    return NewGateway(**_out(row).model_dump(), credentials=credentials)


@router.get("", response_model=list[GatewayOut], summary="List gateways",
            description="Ordered by gateway id.")
async def list_gateways(res: Res, who: Reader) -> list[GatewayOut]:
    rows = await res.pool.fetch(f"SELECT {COLUMNS} FROM gateways g ORDER BY gateway_id")
    return [_out(r) for r in rows]


@router.get("/{gateway_id}", response_model=GatewayOut, summary="Get a gateway",
            responses={404: {}})
async def get_gateway(gateway_id: str, res: Res, who: Reader) -> GatewayOut:
    row = await res.pool.fetchrow(f"SELECT {COLUMNS} FROM gateways g WHERE gateway_id = $1",
                                  gateway_id)
    if row is None:
        raise NotFound(f"gateway {gateway_id} does not exist")
    return _out(row)


@router.patch("/{gateway_id}", response_model=GatewayOut, summary="Update a gateway",
              responses={404: {}})
async def update_gateway(gateway_id: str, body: GatewayPatch, res: Res, who: Writer
                         ) -> GatewayOut:
    given = body.model_fields_set
    async with res.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, gateway_id)
        if body.metadata is not None:
            check_size("metadata", body.metadata, METADATA_MAX_BYTES)
        await conn.execute(
            "UPDATE gateways SET name = $2, auto_register = $3, metadata = $4, "
            "updated_at = now() WHERE gateway_id = $1", gateway_id,
            body.name if "name" in given else row["name"],
            row["auto_register"] if body.auto_register is None else body.auto_register,
            row["metadata"] if body.metadata is None else body.metadata)
        await audit.record(conn, who.actor, "gateway.update", gateway_id, changed=sorted(given))
        row = await _locked(conn, gateway_id)
    return _out(row)


@router.delete("/{gateway_id}", status_code=204, summary="Delete a gateway",
               description="Deletes its MQTT account (its connection is dropped); its devices "
                           "and their data stay, unassigned, and their retained config moves "
                           "back to their own topics.", responses={404: {}, **BROKER_REFUSED})
async def delete_gateway(gateway_id: str, res: Res, who: Writer) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        await _locked(conn, gateway_id)
        children = await conn.fetch("SELECT device_id, gateway_id, metadata FROM devices "
                                    "WHERE gateway_id = $1 FOR UPDATE", gateway_id)
        await conn.execute("DELETE FROM gateways WHERE gateway_id = $1", gateway_id)
        had_account = await forget_account(res.broker, gateway_id,
                                           gateway_role_name(gateway_id),
                                           res.broker.delete_gateway)
        for child in children:
            await _move_config(res, child, None)
        await audit.record(conn, who.actor, "gateway.delete", gateway_id,
                           broker_account=had_account, devices=len(children))


@router.post("/{gateway_id}/credentials", response_model=Credentials,
             summary="Provision or rotate a gateway's MQTT credentials",
             description="Creates its broker account when it has none, otherwise sets a new "
                         "password (the old one stops working and its connection is "
                         "dropped). The password is shown this once.",
             responses={404: {}, **BROKER_REFUSED})
async def issue_credentials(gateway_id: str, res: Res, who: Writer) -> Credentials:
    async with res.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, gateway_id)
        password, how = await _provision(res, gateway_id, row["protocol"])
        await audit.record(conn, who.actor, f"gateway.credentials.{how}", gateway_id)
    return Credentials(username=gateway_id, password=password)


@router.delete("/{gateway_id}/credentials", status_code=204,
               summary="Revoke a gateway's MQTT credentials",
               responses={404: {}, **BROKER_REFUSED})
async def revoke_credentials(gateway_id: str, res: Res, who: Writer) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        await _locked(conn, gateway_id)
        existed = await forget_account(res.broker, gateway_id, gateway_role_name(gateway_id),
                                       res.broker.delete_gateway)
        await audit.record(conn, who.actor, "gateway.credentials.revoke", gateway_id,
                           existed=existed)


@router.get("/{gateway_id}/devices", response_model=Children,
            summary="List a gateway's devices", description="Ordered by device id.",
            responses={404: {}})
async def list_children(gateway_id: str, res: Res, who: Reader, after: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=ASSIGN_MAX)] = 100) -> Children:
    async with res.pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM gateways WHERE gateway_id = $1",
                               gateway_id) is None:
            raise NotFound(f"gateway {gateway_id} does not exist")
        ids = [r["device_id"] for r in await conn.fetch(
            "SELECT device_id FROM devices WHERE gateway_id = $1 AND device_id > $2 "
            "ORDER BY device_id LIMIT $3", gateway_id, after or "", limit + 1)]
    more = len(ids) > limit
    return Children(device_ids=ids[:limit], next_cursor=ids[limit - 1] if more else None)


@router.post("/{gateway_id}/devices", response_model=Children,
             summary="Assign devices to a gateway",
             description="The gateway publishes for them from now on (a device assigned to "
                         "another gateway moves); each one's retained config moves to the "
                         "gateway's tree. Every device must exist.",
             responses={404: {}, 503: {}})
async def assign(gateway_id: str, body: Assignment, res: Res, who: Writer) -> Children:
    wanted = sorted(set(body.device_ids))
    async with res.pool.acquire() as conn, conn.transaction():
        gateway = await _locked(conn, gateway_id)
        foreign = [d for d in wanted if gateway["protocol"] == "sparkplug"
                   and d != gateway_id and not d.startswith(gateway_id + ":")]
        if foreign:  # a Sparkplug node's devices are named by the node (docs/payloads.md)
            raise ValidationFailed("not_sparkplug_device", f"device_ids: {', '.join(foreign[:20])}"
                                   f" are not {gateway_id} or {gateway_id}:<device>",
                                   field="device_ids")
        rows = await conn.fetch("SELECT device_id, gateway_id, metadata FROM devices "
                                "WHERE device_id = any($1::text[]) ORDER BY device_id "
                                "FOR UPDATE", wanted)
        missing = sorted(set(wanted) - {r["device_id"] for r in rows})
        if missing:
            raise ValidationFailed("unknown_device", f"device_ids: {', '.join(missing[:20])} "
                                   "do not exist", field="device_ids")
        await conn.execute("UPDATE devices SET gateway_id = $1, updated_at = now() "
                           "WHERE device_id = any($2::text[])", gateway_id, wanted)
        for row in rows:
            await _move_config(res, row, gateway_id)
        moved = {r["device_id"]: r["gateway_id"] for r in rows
                 if r["gateway_id"] not in (None, gateway_id)}
        await audit.record(conn, who.actor, "gateway.assign", gateway_id, devices=wanted,
                           moved_from=moved or None)
    return Children(device_ids=wanted, next_cursor=None)


@router.delete("/{gateway_id}/devices/{device_id}", status_code=204,
               summary="Unassign a device from a gateway",
               description="Its data from the gateway is refused from now on; its retained "
                           "config moves back to its own topic.", responses={404: {}})
async def unassign(gateway_id: str, device_id: str, res: Res, who: Writer) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT device_id, gateway_id, metadata FROM devices "
                                  "WHERE device_id = $1 AND gateway_id = $2 FOR UPDATE",
                                  device_id, gateway_id)
        if row is None:
            raise NotFound(f"device {device_id} is not assigned to gateway {gateway_id}")
        await conn.execute("UPDATE devices SET gateway_id = NULL, updated_at = now() "
                           "WHERE device_id = $1", device_id)
        await _move_config(res, row, None)
        await audit.record(conn, who.actor, "gateway.unassign", gateway_id, device=device_id)
