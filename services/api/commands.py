"""Commands after they are sent: the devices' answers and the timeout.

A device answers on `insa/devices/<id>/command/ack` with `{"id", "status", "result"}`,
or its gateway for it on `insa/gateways/<gw>/devices/<id>/command/ack`.
The API's broker connection puts those messages on `res.received`; `consume_acks` applies
them. A command's status only moves forward: pending → accepted → done | failed, and
timed_out (set by `sweep_timeouts` once `expires_at` passes) is final, so a late,
repeated or reordered answer changes nothing. An answer counts only on its own device's
topic (the broker lets a device publish on no other), or its gateway's for it while the
device is assigned to that gateway, so one device cannot settle another's commands by
knowing their ids. Every answer not applied is logged and counted
(`insa_api_command_acks_total{outcome}`), never fatal.

Several API replicas each receive every answer and each sweep; both are idempotent.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog
from prometheus_client import Counter

from services.api.deps import Resources
from shared.db import is_data_error, is_transient
from shared.mqtt import parse_command_ack_topic
from shared.retry import Stopped, retry_until_available

log = structlog.get_logger(__name__)

ACK_STATUSES = frozenset({"accepted", "done", "failed"})
SWEEP_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
# The default registry: the one the API's /metrics serves in production.
ACKS = Counter("insa_api_command_acks_total", "Command answers received, by outcome "
               "(applied, stale, unknown_command, wrong_device, wrong_gateway, malformed, "
               "other_topic, error)", ["outcome"])
TIMED_OUT = Counter("insa_api_commands_timed_out_total",
                    "Commands unanswered by their expiry")

# Forward only: pending → accepted → done|failed, and only before expires_at (past it the
# sweeper's timed_out is the outcome, whichever runs first). A result given replaces the
# stored one; an answer without one keeps it.
APPLY = """
UPDATE commands SET status = $3, result = coalesce($4, result), updated_at = now()
WHERE id = $1 AND device_id = $2 AND expires_at > now()
  AND (status = 'pending' OR (status = 'accepted' AND $3 <> 'accepted'))
RETURNING status"""
EXPIRE = """
UPDATE commands SET status = 'timed_out', updated_at = now()
WHERE status IN ('pending', 'accepted') AND expires_at <= now()
RETURNING id, device_id"""


class BadAck(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Ack:
    device_id: str
    command_id: uuid.UUID
    status: str
    result: Any
    gateway: str | None = None  # the gateway that answered for the device


def parse_ack(topic: str, payload: bytes) -> Ack:
    sender = parse_command_ack_topic(topic)
    if sender is None:
        raise BadAck("other_topic", "not a command answer topic")
    device_id, gateway = sender
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadAck("malformed", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadAck("malformed", "not a JSON object")
    try:
        command_id = uuid.UUID(str(body.get("id")))
    except ValueError:
        raise BadAck("malformed", "id: not a UUID") from None
    status = body.get("status")
    if status not in ACK_STATUSES:
        raise BadAck("malformed", f"status: not one of {sorted(ACK_STATUSES)}")
    return Ack(device_id, command_id, status, body.get("result"), gateway)


async def apply_ack(conn: asyncpg.Connection | asyncpg.Pool, ack: Ack) -> str:
    """The outcome: applied, or why not."""
    if ack.gateway is not None and await conn.fetchval(
            "SELECT gateway_id FROM devices WHERE device_id = $1", ack.device_id) != ack.gateway:
        log.warning("command answer from a gateway the device is not assigned to ignored",
                    command_id=str(ack.command_id), device_id=ack.device_id,
                    gateway=ack.gateway)
        return "wrong_gateway"
    if await conn.fetchval(APPLY, ack.command_id, ack.device_id, ack.status,
                           ack.result) is not None:
        return "applied"
    owner = await conn.fetchval("SELECT device_id FROM commands WHERE id = $1",
                                ack.command_id)
    if owner is None:
        return "unknown_command"
    if owner != ack.device_id:
        log.warning("command answer from another device ignored", command_id=str(ack.command_id),
                    device_id=owner, sender=ack.device_id)
        return "wrong_device"
    return "stale"  # repeated, out of order, or after the command timed out


async def handle(res: Resources, topic: str, payload: bytes, stop: asyncio.Event) -> str:
    try:
        ack = parse_ack(topic, payload)
    except BadAck as exc:
        log.warning("command answer ignored", topic=topic, outcome=exc.outcome,
                    reason=str(exc), payload=payload[:200].decode(errors="replace"))
        return exc.outcome
    try:
        return await retry_until_available(
            lambda: apply_ack(res.pool, ack), what="database (command answers)",
            # E.g. a result PostgreSQL refuses (a \u0000 in a string) is this answer's
            # fault: waiting cannot help.
            transient=lambda exc: is_transient(exc) and not is_data_error(exc),
            initial=0.5, max_delay=RETRY_MAX_SECONDS, stop=stop)
    except Stopped:
        return "error"
    except Exception as exc:
        log.warning("command answer not stored", topic=topic, command_id=str(ack.command_id),
                    error=f"{type(exc).__name__}: {exc}")
        return "error"


async def stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True when `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def consume_acks(res: Resources, stop: asyncio.Event) -> None:
    """Apply the devices' answers as they arrive, until stopped."""
    while not stop.is_set():
        try:
            topic, payload = await asyncio.wait_for(res.received.get(), 0.5)
        except TimeoutError:
            continue
        try:
            outcome = await handle(res, topic, payload, stop)
        except Exception:  # never let one answer end the loop
            log.exception("command answer failed", topic=topic)
            outcome = "error"
        ACKS.labels(outcome).inc()


async def expire(pool: asyncpg.Pool) -> int:
    rows = await pool.fetch(EXPIRE)
    for row in rows:
        log.info("command timed out", command_id=str(row["id"]), device_id=row["device_id"])
    TIMED_OUT.inc(len(rows))
    return len(rows)


async def sweep_timeouts(res: Resources, stop: asyncio.Event) -> None:
    """Mark commands past their expiry timed_out, every SWEEP_SECONDS, until stopped."""
    while not await stopped(stop, SWEEP_SECONDS):
        try:
            await expire(res.pool)
        except Exception as exc:
            log.warning("command timeout sweep failed", error=f"{type(exc).__name__}: {exc}")
