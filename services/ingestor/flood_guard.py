"""Flood guard: a per-device message rate limit that suspends an abusive account in the broker.

One device publishing as fast as it can fills the ingestor's queue, and every
other device's readings wait behind its flood. Each device therefore has a token
bucket (a sustained rate and a burst). A message over it is rejected as
`rate_limited` before it is parsed (recorded as one row per device and batch,
with its count), and the device's broker account is disabled for a cool-down:
the dynamic-security plugin drops its connection and refuses new ones until the
guard enables it again. Each suspension is written to `device_suspensions`
before the broker is told, so it ends on time even if the ingestor restarts in
between; a device that floods again within a day is suspended twice as long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import structlog

from services.ingestor.metrics import IngestorMetrics
from services.ingestor.rejects import LogWindow
from services.ingestor.settings import IngestorSettings
from shared.broker_control import BrokerControl
from shared.db import UNAVAILABLE as PG_UNAVAILABLE
from shared.errors import DependencyUnavailable, InsaError, NotFound
from shared.lifecycle import wait_any
from shared.timefmt import utc_text

log = structlog.get_logger(__name__)
TICK_SECONDS = 1.0


class TokenBuckets:
    """Per key: `burst` tokens, refilled at `rate` per second; one message takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last update]

    def admit(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [self.burst - 1, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1 - 1e-9:  # float sums of exact refills land just under 1
            bucket[0] = max(tokens - 1, 0.0)
            return True
        bucket[0] = tokens
        return False

    def forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a new bucket would not."""
        full = [k for k, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


class FloodGuard:
    def __init__(self, settings: IngestorSettings, pool: asyncpg.Pool,
                 metrics: IngestorMetrics, owns_device: Callable[[str], bool]) -> None:
        self.enabled = settings.device_rate_limit > 0
        self.buckets = TokenBuckets(settings.device_rate_limit, settings.device_burst)
        # A gateway speaks for many devices: its own, wider bucket (same suspension).
        self.gateway_buckets = TokenBuckets(settings.gateway_rate_limit, settings.gateway_burst)
        self.cooldown = settings.suspend_seconds
        self.max_cooldown = settings.suspend_max_seconds
        self.actor = settings.mqtt_username
        self.detail = (f"over the account's message rate limit: {settings.device_rate_limit:g}"
                       f"/s (burst {settings.device_burst}) for a device, "
                       f"{settings.gateway_rate_limit:g}/s (burst {settings.gateway_burst}) "
                       "for a gateway")
        self.pool = pool
        self.metrics = metrics
        self.owns_device = owns_device
        self.suspended: set[str] = set()  # refused by the bucket and not yet resumed
        self._to_suspend: dict[str, None] = {}  # ordered set: not yet confirmed by the broker
        self._wake = asyncio.Event()
        self._waiting_log = LogWindow(60.0)  # a dependency outage: once a minute, not a tick

    def admit(self, device_id: str, gateway: bool = False) -> bool:
        """Called for every message before it is parsed, with the account that sent it (a
        device, or a gateway): False means drop it as `rate_limited` (and suspend the
        account if it is not suspended already)."""
        buckets = self.gateway_buckets if gateway else self.buckets
        if not self.enabled or buckets.admit(device_id, time.monotonic()):
            return True
        if device_id not in self.suspended:
            self.suspended.add(device_id)
            self._to_suspend[device_id] = None
            self.metrics.suspended_devices.set(len(self.suspended))
            self._wake.set()
        return False

    async def run(self, stop: asyncio.Event, control: BrokerControl) -> None:
        """Suspend who was refused and resume who served their time, until `stop`."""
        if not self.enabled:
            return
        while not stop.is_set():
            try:
                for device_id in list(self._to_suspend):
                    await self._suspend(control, device_id)
                    del self._to_suspend[device_id]
                await self._resume_expired(control)
            except (*PG_UNAVAILABLE, DependencyUnavailable) as exc:
                if self._waiting_log.allow("waiting") is not None:
                    log.warning("flood guard waiting for a dependency", error=str(exc))
            except InsaError as exc:  # the broker refused a command: try again next tick
                log.error("flood guard command failed", error=str(exc))
            self.buckets.forget_full(time.monotonic())
            self.gateway_buckets.forget_full(time.monotonic())
            await wait_any(self._wake, timeout=TICK_SECONDS)
            self._wake.clear()

    async def _suspend(self, control: BrokerControl, device_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            repeats = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'device.suspend' "
                "AND subject = $1 AND at > now() - interval '1 day'", device_id)
            seconds = min(self.cooldown * 2 ** min(repeats, 20), self.max_cooldown)
            until = await conn.fetchval(
                """
                INSERT INTO device_suspensions (device_id, reason, detail, until)
                VALUES ($1, 'rate_limited', $2, now() + make_interval(secs => $3))
                ON CONFLICT (device_id) DO UPDATE
                   SET until = greatest(device_suspensions.until, excluded.until)
                RETURNING until
                """, device_id, self.detail, seconds)
        # Recorded first, so its end is on record even if we restart before the broker
        # answers; audited once the broker has answered.
        outcome = "success"
        try:
            await control.execute({"command": "disableClient", "username": device_id})
        except NotFound:
            outcome = "failure"
            log.error("flood guard: no broker account to suspend", device_id=device_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE device_suspensions SET confirmed_at = now() "
                               "WHERE device_id = $1", device_id)
            await audit(conn, self.actor, "device.suspend", device_id,
                        {"reason": "rate_limited", "detail": self.detail,
                         "seconds": seconds, "until": utc_text(until)}, outcome)
        self.metrics.suspensions.inc()
        log.warning("device suspended: over its message rate limit", device_id=device_id,
                    detail=self.detail, seconds=seconds, until=utc_text(until))

    async def _resume_expired(self, control: BrokerControl) -> None:
        async with self.pool.acquire() as conn:
            due = [r["device_id"] for r in await conn.fetch(
                "SELECT device_id FROM device_suspensions "
                "WHERE reason = 'rate_limited' AND until <= now() ORDER BY until LIMIT 100")]
        for device_id in filter(self.owns_device, due):
            if device_id in self._to_suspend:
                continue  # flooded again since: its new suspension comes first
            try:
                await control.execute({"command": "enableClient", "username": device_id})
            except NotFound:
                pass  # deleted meanwhile: nothing to enable
            async with self.pool.acquire() as conn, conn.transaction():
                ended = await conn.fetchval(
                    "DELETE FROM device_suspensions WHERE device_id = $1 AND until <= now() "
                    "RETURNING device_id", device_id)
                if ended is not None:
                    await audit(conn, self.actor, "device.resume", device_id,
                                {"reason": "rate_limited"})
            if ended is not None:
                self.suspended.discard(device_id)
                self.metrics.suspended_devices.set(len(self.suspended))
                log.info("device resumed after its suspension", device_id=device_id)


async def audit(conn: asyncpg.Connection, actor: str, action: str, subject: str,
                detail: dict[str, Any], outcome: str = "success") -> None:
    await conn.execute("INSERT INTO audit_log (actor, action, subject, outcome, detail) "
                       "VALUES ($1, $2, $3, $4, $5::jsonb)",
                       actor, action, subject, outcome, orjson.dumps(detail).decode())

