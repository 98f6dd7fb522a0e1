"""What a gateway publishes, checked against the catalog before it is mapped to rows.

A gateway's batch becomes one item per child (its parts); each child part stands only if
the device is assigned to that gateway, or is new and the gateway registers new
children (`auto_register`, the device is created assigned to it). A gateway's own
`offline` status (its Last Will) becomes an `offline` of every child it has. The broker
confines a gateway to its own tree; which devices are its own, only the catalog knows.
Checked per batch, so an assignment changed through the API counts from the next batch.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from services.ingestor.batch import Parsed, Reject
from shared.readings import StatusChange

RejectFor = Callable[[Parsed, str, str], Reject]


async def expand(conn: asyncpg.Connection, items: list[Parsed],
                 reject: RejectFor) -> list[Parsed]:
    """`items` with each gateway batch replaced by its parts, a gateway's status by its
    children's, and every gateway part not the gateway's to send rejected."""
    flat = [part for item in items for part in (item.parts or [item])]
    if not any(p.gateway is not None and p.reject is None for p in flat):
        return flat
    names = sorted({p.gateway for p in flat if p.gateway is not None})
    auto_register = {r["gateway_id"]: r["auto_register"] for r in await conn.fetch(
        "SELECT gateway_id, auto_register FROM gateways WHERE gateway_id = any($1::text[])",
        names)}
    # Only parts still standing name a device: a rejected one may name anything.
    children = {p.device_id for p in flat if p.gateway is not None and p.reject is None
                and p.kind != "gateway_status" and p.device_id is not None}
    assigned = await _assignments(conn, children)
    new = sorted({p.device_id for p in flat
                  if p.device_id in children and p.device_id not in assigned
                  and auto_register.get(p.gateway or "")})
    if new:
        parents = {p.device_id: p.gateway for p in flat if p.device_id in new}
        await conn.execute(
            "INSERT INTO devices (device_id, gateway_id) "
            "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (device_id) DO NOTHING",
            new, [parents[d] for d in new])
        assigned.update(await _assignments(conn, set(new)))
    out: list[Parsed] = []
    for part in flat:
        gateway = part.gateway
        if gateway is None or part.reject is not None:
            out.append(part)
        elif gateway not in auto_register:
            part.reject = reject(part, "unknown_gateway",
                                 f"gateway {gateway} is not registered")
            out.append(part)
        elif part.kind == "gateway_status":
            out.extend(await _children_status(conn, part))
        elif assigned.get(part.device_id or "") != gateway:
            part.reject = reject(part, "not_gateway_device",
                                 f"device {part.device_id} is not assigned to gateway "
                                 f"{gateway}" + ("" if auto_register[gateway] or
                                                 part.device_id in assigned
                                                 else " (and the gateway does not register "
                                                      "new devices)"))
            out.append(part)
        else:
            out.append(part)
    return out


async def _assignments(conn: asyncpg.Connection, devices: set[str]) -> dict[str, str | None]:
    """Each existing device of `devices` → its gateway (None: not a gateway's)."""
    if not devices:
        return {}
    return {r["device_id"]: r["gateway_id"] for r in await conn.fetch(
        "SELECT device_id, gateway_id FROM devices WHERE device_id = any($1::text[])",
        sorted(devices))}


async def _children_status(conn: asyncpg.Connection, item: Parsed) -> list[Parsed]:
    """The gateway's status recorded; when it went offline, each child's offline too (the
    gateway spoke for them). Online does not vouch for its children: they say so."""
    status = item.status
    assert status is not None and item.gateway is not None
    await conn.execute(
        "UPDATE gateways SET status = $2, status_changed_at = $3 WHERE gateway_id = $1 "
        "AND (status_changed_at IS NULL OR status_changed_at <= $3)",
        item.gateway, "online" if status.online else "offline", status.ts)
    if status.online:
        return []
    children = await conn.fetch("SELECT device_id FROM devices WHERE gateway_id = $1",
                                item.gateway)
    return [Parsed(item.delivery, r["device_id"], item.received, "status",
                   status=StatusChange(False, status.ts), gateway=item.gateway)
            for r in children]
