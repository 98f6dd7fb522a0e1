"""What the device routes share: the device as the API shows it, where its tags and desired
configuration live, and its broker account.

A device's `metadata` (jsonb) holds the user's own keys beside three the API keeps:
`tags` (a list of strings, so `metadata->'tags' ? tag` filters), `attributes` (its
equipment's nameplate and operating data, shared/equipment.py, what rules and diagnosis
judge it by) and `desired_config` (`{version, config, updated_at, updated_by}`: the
last configuration published retained on `insa/devices/<id>/config`). Those are shown
as fields of their own and may not be set through `metadata`.

Broker accounts live in the broker only (dynamic-security plugin, over `$CONTROL`);
the API never stores a device's password.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson
from pydantic import BaseModel, Field

from shared.broker_accounts import device_role_name
from shared.broker_control import BrokerControl
from shared.equipment import Equipment
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.mqtt import NAME_PATTERN

TAGS, DESIRED, ATTRIBUTES = "tags", "desired_config", "attributes"
RESERVED_METADATA = frozenset({TAGS, DESIRED, ATTRIBUTES})
DEVICE_ID_PATTERN = f"^{NAME_PATTERN}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,63}$"
METADATA_MAX_BYTES = 16 * 1024
CONFIG_MAX_BYTES = 32 * 1024
COLUMNS = ("device_id, name, device_type, metadata, status, status_changed_at, last_seen, "
           "gateway_id, created_at, updated_at")


class DesiredConfig(BaseModel):
    version: int = Field(description="Increases by one with each configuration published")
    config: dict[str, Any] = Field(examples=[{"sample_seconds": 5, "vsd_max_hz": 60}])
    updated_at: datetime
    updated_by: str = Field(examples=["user:ana"])


class DeviceOut(BaseModel):
    device_id: str = Field(examples=["W-101"])
    name: str | None = Field(examples=["Well 101, pad 3"])
    device_type: str = Field(examples=["esp"])
    status: Literal["unknown", "online", "offline"]
    status_changed_at: datetime | None
    last_seen: datetime | None
    tags: list[str] = Field(examples=[["field=north", "pad-3"]])
    metadata: dict[str, Any] = Field(examples=[{"pump_model": "REDA D460N"}])
    attributes: Equipment = Field(default_factory=Equipment)
    desired_config: DesiredConfig | None = None
    gateway_id: str | None = Field(None, description="The gateway that publishes for it "
                                   "(docs/payloads.md, \"Gateways\"); null: none")
    created_at: datetime
    updated_at: datetime


class Credentials(BaseModel):
    username: str = Field(description="The MQTT username and client id: the device id",
                          examples=["W-101"])
    password: str = Field(description="Shown this once; the API does not keep it")


def device_out(row: asyncpg.Record) -> DeviceOut:
    metadata = dict(row["metadata"] or {})
    tags = metadata.pop(TAGS, None) or []
    desired = metadata.pop(DESIRED, None)
    attributes = metadata.pop(ATTRIBUTES, None) or {}
    return DeviceOut(**{**dict(row), "metadata": metadata, "tags": tags,
                        "attributes": attributes, "desired_config": desired})


def check_size(what: str, value: Any, limit: int) -> bytes:
    """The value's JSON, or 422 when it is larger than `limit` bytes or not storable
    (an integer beyond 64 bits)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise ValidationFailed("unstorable", f"{what}: {exc}", field=what) from None
    if len(encoded) > limit:
        raise ValidationFailed("too_large", f"{what}: {len(encoded)} bytes of JSON, more "
                               f"than the {limit} allowed", field=what)
    return encoded


def user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    reserved = sorted(RESERVED_METADATA & metadata.keys())
    if reserved:
        raise ValidationFailed("reserved_metadata_key", f"metadata: {', '.join(reserved)} "
                               "may not be set here (tags and attributes have fields of their "
                               "own; desired_config is set by POST /devices/{id}/config)",
                               field="metadata")
    check_size("metadata", metadata, METADATA_MAX_BYTES)
    return metadata


def unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


async def locked(conn: asyncpg.Connection, device_id: str) -> asyncpg.Record:
    """The device's row, locked for this transaction (changes to one device, including
    its broker account and retained config, happen one at a time)."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM devices WHERE device_id = $1 "
                              "FOR UPDATE", device_id)
    if row is None:
        raise NotFound(f"device {device_id} does not exist")
    return row


async def provision(broker: BrokerControl, device_id: str) -> tuple[str, str]:
    """Create the device's account, or give it a new password when it has one; returns
    (password, "provision" or "rotate")."""
    return await provision_account(broker, device_id, device_role_name(device_id),
                                   broker.create_device)


async def provision_account(broker: BrokerControl, username: str, rolename: str,
                            create: Callable[[str], Awaitable[str]]) -> tuple[str, str]:
    """`create(username)` the account whose one role is `rolename`, or give it a new
    password when it has one; returns (password, "provision" or "rotate").

    Creating first: the plugin makes the role, then the client. When either exists (an
    account made earlier, or a role left behind), the client exists afterwards either
    way, so setting its password makes the answer right in every case.
    """
    try:
        return await create(username), "provision"
    except Conflict:
        await own_account(broker, username, rolename)
        return await broker.rotate_password(username), "rotate"


async def own_account(broker: BrokerControl, username: str, rolename: str) -> bool:
    """True if the broker has an account of this name whose one role is `rolename` (the
    device's or gateway's own); Conflict if the name is another account's (a bridge, a
    service), which must never be taken over; False if none."""
    try:
        [answer] = await broker.execute({"command": "getClient", "username": username})
    except NotFound:
        return False
    roles = [r.get("rolename") for r in answer.get("data", {}).get("client", {}).get("roles", [])]
    if roles != [rolename]:
        kind = rolename.split(":", 1)[0]  # device, gateway
        raise Conflict(f"broker account {username} exists and is not this {kind}'s "
                       f"(roles {roles}); it is left alone")
    return True


async def forget(broker: BrokerControl, device_id: str) -> bool:
    """Delete the device's account and role (connections are dropped); False when it had
    none."""
    return await forget_account(broker, device_id, device_role_name(device_id),
                                broker.delete_device)


async def forget_account(broker: BrokerControl, username: str, rolename: str,
                         delete: Callable[[str], Awaitable[None]]) -> bool:
    """`delete(username)` when it is the account whose one role is `rolename`; False when
    there is none (or it is another's). The plugin runs both commands even when the first
    finds nothing."""
    try:
        if not await own_account(broker, username, rolename):
            return False
    except Conflict:  # another account of that name: not this one's to delete
        return False
    try:
        await delete(username)
    except NotFound:
        return False
    return True
