"""Rules' webhook and e-mail actions delivered by the worker against real receivers: an
HTTP server in this event loop that fails or hangs on purpose, an aiosmtpd SMTP server, and
this test's database (tests/services/alerts/deliveries.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from email import message_from_bytes, policy
from typing import Any

import asyncpg
import orjson
import structlog

from devtools.stack.processes import free_port
from services.alerts.actions import DELIVERABLE, enqueue
from shared import db
from tests.services.alerts.deliveries import (
    alert_event,
    counted,
    deliveries,
    new_events,
    queue,
    running,
    settings,
    settled,
)
from tests.utils.receivers import Inbox, Receiver
from tests.utils.waiting import wait_until


async def test_enqueue_writes_one_pending_delivery_per_action(pool: asyncpg.Pool) -> None:
    actions: list[dict[str, Any]] = [{"kind": "webhook", "url": "http://example.test/hook"},
                                     {"kind": "email", "to": ["ops@example.test"]}]
    event_id = await queue(pool, *actions)
    rows = await deliveries(pool)
    assert [(r["event_id"], r["kind"], r["status"], r["attempts"]) for r in rows] == \
        [(event_id, a["kind"], "pending", 0) for a in actions]
    assert rows[0]["target"] == {"kind": "webhook", "url": "http://example.test/hook",
                                 "secret": None, "secret_env": None, "timeout_seconds": 5.0}
    assert rows[1]["payload"] == alert_event(event_id)


async def test_a_failing_webhook_is_retried_with_growing_backoff_then_delivered(
        pool: asyncpg.Pool, receiver: Receiver) -> None:
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/fail/3"})
    async with running(pool, settings(delivery_backoff_seconds=0.2)) as worker:
        (row,) = await settled(pool)
    assert (row["status"], row["attempts"]) == ("delivered", 4)
    assert row["last_error"] == "HTTP 500: boom"  # what the tries before the last one met
    times = [r.at for r in receiver.to("/fail/3")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each wait is at least half of 0.2 s doubled per try (the jitter takes up to half).
    assert [round(g, 2) >= 0.1 * 2 ** k for k, g in enumerate(gaps)] == [True] * 3, gaps
    assert gaps[2] > gaps[0]
    assert counted(worker.metrics, "retry") == 3 and counted(worker.metrics, "delivered") == 1


async def test_after_the_last_try_the_delivery_is_dead_with_its_error(
        pool: asyncpg.Pool, receiver: Receiver) -> None:
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/down"})
    with structlog.testing.capture_logs() as logs:
        async with running(pool, settings(delivery_attempts=3)) as worker:
            (row,) = await settled(pool)
    assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 3, "HTTP 500: boom")
    assert row["finished_at"] is not None
    assert len(receiver.to("/down")) == 3
    dead = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["delivery_id"], e["error"]) for e in dead] == \
        [("alert action failed for good; dead-lettered", row["id"], "HTTP 500: boom")]
    assert counted(worker.metrics, "retry") == 2 and counted(worker.metrics, "dead") == 1


async def test_a_hanging_webhook_delays_no_other_delivery(
        pool: asyncpg.Pool, receiver: Receiver) -> None:
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/hang", "timeout_seconds": 2})
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/ok"})  # claimed after it
    async with running(pool, settings(delivery_backoff_seconds=30)):
        hanging, fine = await settled(pool)
        # Delivered while the hanging one still waits for its 2 s timeout.
        assert fine["status"] == "delivered"
        assert hanging["status"] == "pending" and hanging["last_error"] is None
        hanging, _ = await wait_until(lambda: deliveries(pool),
                                      lambda rows: rows[0]["last_error"] is not None,
                                      timeout=5, what="the hanging webhook's timeout")
    assert hanging["status"] == "pending" and hanging["attempts"] == 1  # retried later
    assert hanging["last_error"] == "no answer within 2 s"


async def test_stopping_lets_deliveries_in_flight_finish(
        pool: asyncpg.Pool, receiver: Receiver) -> None:
    receiver.delay = 0.5
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/ok"})
    async with running(pool, settings()):
        await wait_until(lambda: asyncio.sleep(0, receiver.requests), bool, timeout=5)
    (row,) = await deliveries(pool)  # `running` returned once the worker had stopped
    assert row["status"] == "delivered"


async def test_email_arrives_with_its_subject_and_a_readable_body(
        pool: asyncpg.Pool, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    to = ["ops@example.test", "night-shift@example.test"]
    event_id = await queue(pool, {"kind": "email", "to": to})
    alerts = settings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False,
                      smtp_sender="alerts@insa.example.test")
    async with running(pool, alerts):
        (row,) = await settled(pool)
    assert row["status"] == "delivered", row["last_error"]
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == "alerts@insa.example.test" and envelope.rcpt_tos == to
    assert isinstance(envelope.content, bytes)
    mail = message_from_bytes(envelope.content, policy=policy.default)
    # (Python's folder may break right after "Subject:"; unfolding leaves a space there.)
    assert mail["Subject"].strip() == "[CRITICAL] firing: motor temperature high on W-7: " \
                                      "motor_temp 104.2 (> 100)"
    body = mail.get_body().get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert "Device:           W-7\n" in body and "Threshold:        > 100\n" in body
    assert "Labels:           site=north\n" in body
    assert orjson.loads(body.split("The event as JSON:\n")[1]) == alert_event(event_id)


async def test_email_without_an_smtp_server_configured_fails_saying_so(
        pool: asyncpg.Pool) -> None:
    await queue(pool, {"kind": "email", "to": ["ops@example.test"]})
    async with running(pool, settings(delivery_attempts=1)):
        (row,) = await settled(pool)
    assert row["status"] == "dead"
    assert row["last_error"] == "no SMTP server configured (INSA_ALERTS_SMTP_HOST)"


async def test_two_workers_on_one_table_deliver_each_row_exactly_once(
        db_url: str, pool: asyncpg.Pool, receiver: Receiver) -> None:
    receiver.delay = 0.01
    event_ids = await new_events(pool, 120)
    async with pool.acquire() as conn, conn.transaction():
        for event_id in event_ids:
            await enqueue(conn, event_id, [DELIVERABLE.validate_python(
                {"kind": "webhook", "url": f"{receiver.url}/ok"})], alert_event(event_id))
    other_pool = await db.create_pool(db_url, max_size=4)
    try:
        alerts = settings(delivery_concurrency=4)
        async with running(pool, alerts) as one, running(other_pool, alerts) as two:
            rows = await settled(pool, len(event_ids), timeout=20)
    finally:
        await other_pool.close()
    assert {r["status"] for r in rows} == {"delivered"} and {r["attempts"] for r in rows} == {1}
    sent = Counter(r.headers["x-insa-delivery"] for r in receiver.requests)
    assert sent == Counter({str(r["id"]): 1 for r in rows})
    by_worker = [counted(w.metrics, "delivered") for w in (one, two)]
    assert sum(by_worker) == len(event_ids) and min(by_worker) > 0, by_worker


async def test_a_database_outage_is_waited_out_and_stop_still_ends_the_worker(
        receiver: Receiver) -> None:
    down = await db.create_pool(f"postgresql://insa@127.0.0.1:{free_port()}/insa")
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(down, settings()):
                await wait_until(lambda: asyncio.sleep(0, logs), lambda got: len(got) > 0,
                                 timeout=5, what="the outage logged")
                await asyncio.sleep(0.5)  # several retries; the worker is still running
    finally:
        await down.close()
    assert logs[0]["event"] == "dependency unavailable; retrying"
    assert logs[0]["dependency"] == "alert deliveries"
