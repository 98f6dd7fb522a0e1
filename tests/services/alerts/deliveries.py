"""Helpers of the delivery tests (test_actions.py, test_webhook_guard.py; their fixtures
are in conftest.py): the worker's settings, queued events and the deliveries' rows. The
receivers listen on 127.0.0.1, an internal address (shared/webhooks.py), so these
settings allow it, as an operator would."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from services.alerts.actions import DELIVERABLE, DeliveryWorker, enqueue
from services.alerts.metrics import AlertsMetrics
from services.alerts.settings import AlertsSettings
from tests.utils.tasks import until_stopped
from tests.utils.waiting import wait_until

# INSA_*: tests/conftest.py clears these, so it is unset unless a test sets it.
SECRET_ENV = "INSA_WEBHOOK_SECRET_SCADA"  # the rule names it `secret: scada`


def settings(**overrides: Any) -> AlertsSettings:
    """Small backoff so retries happen within a test; the receivers' address allowed."""
    fast: dict[str, Any] = {"mqtt_password": "not-a-placeholder", "delivery_backoff_seconds": 0.1,
                            "delivery_backoff_max_seconds": 1.0, "retry_max_delay_seconds": 0.2,
                            "webhook_allow": "127.0.0.1"}
    return AlertsSettings(**(fast | overrides))


def alert_event(event_id: int) -> dict[str, Any]:
    return {"id": event_id, "alert_id": 17, "rule_id": 3, "rule": "motor temperature high",
            "device_id": "W-7", "severity": "critical", "state": "firing", "event": "firing",
            "value": 104.2, "threshold": "> 100",
            "message": "motor temperature high on W-7: motor_temp 104.2 (> 100)\nsecond line",
            "active_since": "2026-11-22T10:30:00Z", "started_at": "2026-11-22T10:35:00Z",
            "acknowledged_at": None, "acknowledged_by": None, "resolved_at": None,
            "resolved_by": None, "at": "2026-11-22T10:35:00Z", "actor": "engine",
            "labels": {"site": "north"}}


async def new_events(pool: asyncpg.Pool, count: int = 1) -> list[int]:
    """`count` published events of one firing alert (what a delivery refers to)."""
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO devices (device_id) VALUES ('W-7') ON CONFLICT DO NOTHING")
        rule_id = await conn.fetchval(
            "INSERT INTO rules (name, definition) VALUES ($1, $2) RETURNING id",
            f"rule-{time.monotonic_ns()}", {"type": "threshold"})
        alert_id = await conn.fetchval(
            "INSERT INTO alerts (rule_id, device_id, state, severity, message, active_since,"
            " fire_at) VALUES ($1, 'W-7', 'firing', 'critical', 'hot', now(), now()) "
            "RETURNING id", rule_id)
        rows = await conn.fetch(
            "INSERT INTO alert_events (alert_id, kind, state, severity, at, actor, "
            "published_at) SELECT $1, 'firing', 'firing', 'critical', now(), 'engine', now() "
            "FROM generate_series(1, $2) RETURNING id", alert_id, count)
    return [r["id"] for r in rows]


async def queue(pool: asyncpg.Pool, *actions: dict[str, Any]) -> int:
    """One event with these actions queued, as the outbox publisher does; its id."""
    (event_id,) = await new_events(pool)
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, event_id, [DELIVERABLE.validate_python(a) for a in actions],
                      alert_event(event_id))
    return event_id


async def deliveries(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM alert_deliveries ORDER BY id")


def counted(metrics: AlertsMetrics, outcome: str, kind: str = "webhook") -> float:
    return metrics.deliveries.labels(kind, outcome)._value.get()


@contextlib.asynccontextmanager
async def running(pool: asyncpg.Pool, alerts: AlertsSettings) -> AsyncIterator[DeliveryWorker]:
    worker = DeliveryWorker(pool, alerts, AlertsMetrics(CollectorRegistry()), poll_seconds=0.05)
    async with until_stopped(worker.run):
        yield worker


async def settled(pool: asyncpg.Pool, count: int = 1, timeout: float = 10) -> list[asyncpg.Record]:
    """The deliveries once `count` of them are delivered or dead."""
    return await wait_until(lambda: deliveries(pool),
                            lambda rows: sum(r["status"] != "pending" for r in rows) >= count,
                            timeout=timeout, what=f"{count} deliveries settled")
