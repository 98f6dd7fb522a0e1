"""Rules' webhook and e-mail actions delivered by the worker against real receivers: an
HTTP server in this event loop that fails, hangs or redirects on purpose, an aiosmtpd SMTP
server, and this test's database. Webhook targets and keys are guarded
(shared/webhooks.py): the receivers listen on 127.0.0.1, an internal address,
so these tests allow it explicitly, as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from typing import Any

import anyio
import asyncpg
import orjson
import pytest
import structlog
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry

from devtools.stack.processes import free_port
from services.alerts.actions import DELIVERABLE, DeliveryWorker, enqueue
from services.alerts.metrics import AlertsMetrics
from services.alerts.settings import AlertsSettings
from shared import db, webhooks
from tests.utils.receivers import Inbox, Receiver
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


# --- receivers and the database ------------------------------------------------------------

@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield receiver
    receiver.closing.set()
    server.close()
    await server.wait_closed()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


# --- the database and the worker ------------------------------------------------------------

@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(db_url, max_size=4)
    yield pool
    await pool.close()


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
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def settled(pool: asyncpg.Pool, count: int = 1, timeout: float = 10) -> list[asyncpg.Record]:
    """The deliveries once `count` of them are delivered or dead."""
    return await wait_until(lambda: deliveries(pool),
                            lambda rows: sum(r["status"] != "pending" for r in rows) >= count,
                            timeout=timeout, what=f"{count} deliveries settled")


# --- the tests ------------------------------------------------------------------------------

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


async def test_a_signed_webhook_verifies_with_the_secret_and_its_timestamp(
        pool: asyncpg.Pool, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "a-long-shared-webhook-secret")
    event_id = await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/ok",
                                  "secret": "scada"})
    async with running(pool, settings()):
        (row,) = await settled(pool)
    assert row["status"] == "delivered" and row["attempts"] == 1
    (request,) = receiver.requests
    assert orjson.loads(request.body) == alert_event(event_id)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-insa-delivery"] == str(row["id"])
    timestamp = request.headers["x-insa-timestamp"]
    assert abs(int(timestamp) - time.time()) < 10  # fresh: a receiver refuses old ones

    def sign(ts: str, secret: str = "a-long-shared-webhook-secret") -> str:
        mac = hmac.new(secret.encode(), f"{ts}.".encode() + request.body, hashlib.sha256)
        return f"sha256={mac.hexdigest()}"

    assert hmac.compare_digest(request.headers["x-insa-signature"], sign(timestamp))
    # A replay with a fresh timestamp, or another key, does not verify.
    assert request.headers["x-insa-signature"] != sign(str(int(timestamp) + 300))
    assert request.headers["x-insa-signature"] != sign(timestamp, "another-secret")


async def test_a_webhook_whose_secret_is_missing_is_never_sent_unsigned(
        pool: asyncpg.Pool, receiver: Receiver) -> None:
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/ok", "secret": "scada"})
    async with running(pool, settings(delivery_attempts=1)):
        (row,) = await settled(pool)
    assert row["status"] == "dead"
    assert SECRET_ENV in row["last_error"] and "not sent unsigned" in row["last_error"]
    assert receiver.requests == []


async def test_no_variable_outside_the_webhook_secrets_signs_anything(
        pool: asyncpg.Pool, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a rule once used as an oracle: the engine's own database URL and broker password.
    monkeypatch.setenv("INSA_DATABASE_URL", "postgresql://insa:real-db-password@db/insa")
    monkeypatch.setenv("INSA_ALERTS_MQTT_PASSWORD", "the-real-broker-password")
    monkeypatch.setenv(SECRET_ENV, "a-long-shared-webhook-secret")
    for variable in ("INSA_DATABASE_URL", "INSA_ALERTS_MQTT_PASSWORD", "INSA_DOES_NOT_EXIST"):
        await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/ok",
                           "secret_env": variable})
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/ok", "secret_env": SECRET_ENV})
    async with running(pool, settings()) as worker:  # 6 attempts, yet each dead at once
        *legacy, namespaced = await settled(pool, 4)
    assert [(r["status"], r["attempts"]) for r in legacy] == [("dead", 1)] * 3
    # One reason whether the variable exists or not: nothing tells them apart.
    assert [r["last_error"] for r in legacy] == [
        f"refused: secret_env {variable} is outside the webhook secrets "
        "(INSA_WEBHOOK_SECRET_<NAME>); not sent: provision INSA_WEBHOOK_SECRET_<NAME> and "
        "name it in the rule as `secret: <name>`"
        for variable in ("INSA_DATABASE_URL", "INSA_ALERTS_MQTT_PASSWORD", "INSA_DOES_NOT_EXIST")]
    assert counted(worker.metrics, "dead") == 3
    # A legacy secret_env inside the namespace still signs.
    assert namespaced["status"] == "delivered"
    (request,) = receiver.requests
    assert request.headers["x-insa-signature"].startswith("sha256=")


async def test_an_internal_target_is_refused_unless_the_operator_allows_it(
        pool: asyncpg.Pool, receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    urls = [f"{receiver.url}/ok", f"http://localhost:{port}/ok"]  # the name: its addresses
    for url in urls:
        await queue(pool, {"kind": "webhook", "url": url})
    with structlog.testing.capture_logs() as logs:
        async with running(pool, settings(webhook_allow="")) as worker:  # the default
            refused = await settled(pool, 2)
    assert [(r["status"], r["attempts"]) for r in refused] == [("dead", 1)] * 2  # no retries
    assert refused[0]["last_error"] == \
        "refused: 127.0.0.1 is a loopback address, not in INSA_ALERTS_WEBHOOK_ALLOW"
    assert refused[1]["last_error"].startswith("refused: localhost resolves to ")
    assert refused[1]["last_error"].endswith(", a loopback address, not in "
                                             "INSA_ALERTS_WEBHOOK_ALLOW")
    assert receiver.requests == []
    assert counted(worker.metrics, "dead") == 2
    assert sorted(e["error"] for e in logs if e["log_level"] == "error") == \
        sorted(r["last_error"] for r in refused)

    # Allowed by address, and by name (then every address of the name is).
    for url in urls:
        await queue(pool, {"kind": "webhook", "url": url})
    async with running(pool, settings(webhook_allow="127.0.0.1, localhost")):
        rows = await settled(pool, 4)
    assert [r["status"] for r in rows[2:]] == ["delivered", "delivered"], rows
    assert sorted(r.headers["host"] for r in receiver.to("/ok")) == \
        [f"127.0.0.1:{port}", f"localhost:{port}"]


async def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected(
        pool: asyncpg.Pool, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: were the name resolved again to connect, the system's resolver would
    be asked (and know nothing of it); it is delivered to the address checked, Host kept."""
    resolved, system = [], anyio.getaddrinfo

    async def resolver(host: str, port: int, **kwargs: Any) -> Any:
        if host != "hooks.example.test":
            return await system(host, port, **kwargs)
        resolved.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(webhooks.anyio, "getaddrinfo", resolver)
    port = receiver.url.rsplit(":", 1)[1]
    action = {"kind": "webhook", "url": f"http://hooks.example.test:{port}/ok"}
    await queue(pool, action)
    async with running(pool, settings(webhook_allow="")):
        (refused,) = await settled(pool)  # a public-looking name, an internal address
    assert refused["last_error"] == "refused: hooks.example.test resolves to 127.0.0.1, " \
                                    "a loopback address, not in INSA_ALERTS_WEBHOOK_ALLOW"
    await queue(pool, action)
    async with running(pool, settings(webhook_allow="127.0.0.0/8")):
        (_, delivered) = await settled(pool, 2)
    assert delivered["status"] == "delivered", delivered["last_error"]
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{port}"
    assert resolved == ["hooks.example.test"] * 2  # once per connection, by the guard


async def test_a_redirect_is_not_followed(pool: asyncpg.Pool, receiver: Receiver) -> None:
    receiver.redirect_to = f"{receiver.url}/ok"  # internal, and even allowed
    await queue(pool, {"kind": "webhook", "url": f"{receiver.url}/redirect"})
    async with running(pool, settings(delivery_attempts=1)):
        (row,) = await settled(pool)
    assert (row["status"], row["last_error"]) == \
        ("dead", "HTTP 302: redirect not followed (webhooks go only to the rule's URL)")
    assert [r.path for r in receiver.requests] == ["/redirect"]


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
