"""Rules' webhook and e-mail actions: queued with each published alert event, then
delivered with retries, backoff and a dead-letter record. (MQTT actions go out with the
event itself, on the outbox's connection: publishing.py.)

The queue is `alert_deliveries`, written in the transaction that marks the event published
(`enqueue`), so neither a crash nor a receiver that is down loses an action. Delivery is
at-least-once: a row is claimed with a lease (its `next_at` moved past the longest try), so
no other replica sends it meanwhile, and a worker that dies mid-send leaves it to come due
again; receivers drop a repeated `X-Insa-Delivery` (webhook) or event `id`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import partial
from typing import Any

import aiosmtplib
import asyncpg
import httpx
import orjson
import structlog
from pydantic import TypeAdapter, ValidationError

from services.alerts.metrics import AlertsMetrics
from services.alerts.settings import AlertsSettings
from shared import db
from shared.alerting.rules import EmailAction, WebhookAction
from shared.lifecycle import wait_any
from shared.retry import Stopped, retry_until_available
from shared.webhooks import (
    WebhookRefused,
    guarded_client,
    read_secret,
    secret_variable,
)

log = structlog.get_logger(__name__)
Deliverable = WebhookAction | EmailAction
DELIVERABLE: TypeAdapter[Deliverable] = TypeAdapter(Deliverable)
POLL_SECONDS = 1.0  # also finds retries come due and rows whose lease another replica let lapse
SEND_TIMEOUT_SECONDS = 30.0  # e-mail; a webhook has its own timeout_seconds (<= 60)
LEASE_SECONDS = 120.0  # longer than any try plus recording its outcome
ERROR_CHARS = 1000
SUBJECT_CHARS = 150

CLAIM = """
UPDATE alert_deliveries d SET attempts = d.attempts + 1,
       next_at = now() + make_interval(secs => $2)
  FROM (SELECT id FROM alert_deliveries WHERE status = 'pending' AND next_at <= now()
         ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
 WHERE d.id = due.id
RETURNING d.id, d.event_id, d.kind, d.target, d.payload, d.attempts"""
# `attempts` is the fence: a worker whose lease lapsed (another took the row) changes nothing.
FENCE = "WHERE id = $1 AND attempts = $2 AND status = 'pending'"
DELIVERED = f"UPDATE alert_deliveries SET status = 'delivered', finished_at = now() {FENCE}"
RETRY = f"UPDATE alert_deliveries SET last_error = $3, " \
        f"next_at = now() + make_interval(secs => $4) {FENCE}"
DEAD = f"UPDATE alert_deliveries SET status = 'dead', last_error = $3, finished_at = now() {FENCE}"


class DeliveryFailed(Exception):
    """One try of an action failed; the message is what `last_error` records."""

    def __init__(self, message: str, *, status: int | None = None,
                 permanent: bool = False) -> None:
        super().__init__(message)
        self.status = status        # the HTTP status a webhook answered
        self.permanent = permanent  # retrying cannot help: dead-letter at once


async def enqueue(conn: asyncpg.Connection, event_id: int, actions: list[Deliverable],
                  payload: dict[str, Any]) -> int:
    """Queue one delivery per action of the event's rule; `conn` (a `shared.db` pool's, for
    the jsonb codec) is in the transaction that marks the event published."""
    if actions:
        await conn.executemany(
            "INSERT INTO alert_deliveries (event_id, kind, target, payload) "
            "VALUES ($1, $2, $3, $4)",
            [(event_id, a.kind, a.model_dump(mode="json"), payload) for a in actions])
    return len(actions)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC>` of `<timestamp>.<body>`, as Stripe signs: the receiver recomputes
    it and refuses an old timestamp, so a captured request cannot be replayed later."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


async def send_webhook(http: httpx.AsyncClient, action: WebhookAction, body: bytes,
                       delivery_id: int) -> None:
    """POST the event. `http` is `webhooks.guarded_client`: it refuses internal targets
    (WebhookRefused, raised from its connection) and follows no redirect."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Insa-Timestamp": timestamp,
               "X-Insa-Delivery": str(delivery_id)}
    try:  # a variable outside the namespace never becomes usable: dead at once
        variable = secret_variable(action.secret, action.secret_env)
    except WebhookRefused as exc:
        raise DeliveryFailed(f"refused: {exc}", permanent=True) from None
    if variable is not None:  # never send unsigned what the rule asked to sign
        try:  # a missing one may yet be provisioned (and the engine restarted): retried
            secret = read_secret(variable, os.environ)
        except WebhookRefused as exc:
            raise DeliveryFailed(str(exc)) from None
        headers["X-Insa-Signature"] = signature(secret, timestamp, body)
    # Errors leave out the URL: a webhook URL often is a credential (chat services).
    try:
        async with http.stream("POST", action.url, content=body, headers=headers,
                               timeout=action.timeout_seconds) as response:
            if response.is_success:
                return
            if response.is_redirect:  # the checked target is the only one sent to
                raise DeliveryFailed(f"HTTP {response.status_code}: redirect not followed "
                                     "(webhooks go only to the rule's URL)",
                                     status=response.status_code)
            head = b""
            async for chunk in response.aiter_bytes():  # a bounded excerpt for last_error
                head += chunk
                if len(head) >= 200:
                    break
            raise DeliveryFailed(f"HTTP {response.status_code}: "
                                 f"{head[:200].decode(errors='replace')}",
                                 status=response.status_code)
    except WebhookRefused as exc:
        raise DeliveryFailed(f"refused: {exc}", permanent=True) from None
    except httpx.TimeoutException:
        raise DeliveryFailed(f"no answer within {action.timeout_seconds:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None


EMAIL_FIELDS = {"rule": "Rule", "device_id": "Device", "severity": "Severity",
                "state": "State", "value": "Value", "threshold": "Threshold",
                "active_since": "Active since", "started_at": "Started",
                "acknowledged_at": "Acknowledged", "acknowledged_by": "Acknowledged by",
                "resolved_at": "Resolved", "resolved_by": "Resolved by",
                "shelved_until": "Shelved until", "shelved_by": "Shelved by",
                "at": "Event time", "actor": "Event by", "note": "Note"}


def email_message(action: EmailAction, payload: dict[str, Any], sender: str) -> EmailMessage:
    """Subject `[CRITICAL] firing: <first line of the message>`; the body lists the alert's
    fields for a person, then the event as JSON for a program."""
    first_line = (str(payload.get("message") or "").splitlines() or [""])[0]
    subject = f"[{str(payload.get('severity', '')).upper()}] {payload.get('event')}: {first_line}"
    fields = [f"{label + ':':<17} {payload[key]}" for key, label in EMAIL_FIELDS.items()
              if payload.get(key) is not None]
    fields += [f"{'Labels:':<17} " + ", ".join(f"{k}={v}" for k, v in labels.items())
               for labels in [payload.get("labels")] if labels]
    as_json = orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    message = EmailMessage()
    message["Subject"] = subject if len(subject) <= SUBJECT_CHARS else \
        subject[:SUBJECT_CHARS - 1] + "…"
    message["From"] = sender
    message["To"] = ", ".join(action.to)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message.set_content("\n".join([str(payload.get("message", "")), "", *fields, "",
                                   "The event as JSON:", as_json.decode(), ""]))
    return message


async def send_email(settings: AlertsSettings, action: EmailAction,
                     payload: dict[str, Any]) -> None:
    if not settings.smtp_host:
        raise DeliveryFailed("no SMTP server configured (INSA_ALERTS_SMTP_HOST)")
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        refused, _ = await aiosmtplib.send(
            email_message(action, payload, settings.smtp_sender), hostname=settings.smtp_host,
            port=settings.smtp_port, start_tls=settings.smtp_starttls,
            username=settings.smtp_username, password=password, timeout=SEND_TIMEOUT_SECONDS)
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"SMTP {settings.smtp_host}:{settings.smtp_port}: "
                             f"{type(exc).__name__}: {exc}") from None
    if refused:  # the others have it; sending again would repeat it to them
        log.warning("e-mail recipients refused", refused=sorted(refused))


class DeliveryWorker:
    """Delivers due rows of `alert_deliveries`, up to `delivery_concurrency` at a time, each
    bounded by its own timeout; replicas share the table (claims skip locked rows)."""

    def __init__(self, pool: asyncpg.Pool, settings: AlertsSettings, metrics: AlertsMetrics,
                 *, poll_seconds: float = POLL_SECONDS) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.wake = asyncio.Event()  # set once enqueued deliveries are committed
        self._finished = asyncio.Event()  # a delivery ended: a slot is free
        self._in_flight: set[asyncio.Task[None]] = set()
        self._http = guarded_client(settings.webhook_policy)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`, then let deliveries in flight finish (up to drain_seconds)."""
        try:
            while not stop.is_set():
                self.wake.clear()
                self._finished.clear()
                free = self.settings.delivery_concurrency - len(self._in_flight)
                if free > 0:
                    rows = await retry_until_available(
                        partial(self._claim, free), transient=db.is_transient,
                        what="alert deliveries", stop=stop,
                        max_delay=self.settings.retry_max_delay_seconds)
                    for row in rows:
                        task = asyncio.create_task(self._deliver(row),
                                                   name=f"alert-delivery-{row['id']}")
                        self._in_flight.add(task)
                        task.add_done_callback(self._ended)
                    if len(rows) == free:
                        continue  # maybe more are due: claim again when a slot frees
                await wait_any(self.wake, self._finished, stop, timeout=self.poll_seconds)
        except Stopped:
            pass
        finally:
            try:
                await self._drain()
            finally:
                await self._http.aclose()

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones: doubling up to the cap,
        then between half and all of that, so retries from replicas do not arrive in step."""
        delay = min(self.settings.delivery_backoff_seconds * 2.0 ** (attempts - 1),
                    self.settings.delivery_backoff_max_seconds)
        return delay * random.uniform(0.5, 1.0)

    async def _claim(self, limit: int) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(CLAIM, limit, LEASE_SECONDS)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._finished.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("alert delivery task failed", task=task.get_name(), exc_info=exc)

    async def _deliver(self, row: asyncpg.Record) -> None:
        started, failure = time.monotonic(), None
        try:
            await self._send(row)
        except DeliveryFailed as exc:
            failure = exc
        except Exception as exc:  # a sender's bug must not keep the row from being recorded
            log.exception("alert action raised", delivery_id=row["id"], kind=row["kind"])
            failure = DeliveryFailed(f"{type(exc).__name__}: {exc}")
        self.metrics.delivery_seconds.labels(row["kind"]).observe(time.monotonic() - started)
        await self._record(row, failure)

    async def _send(self, row: asyncpg.Record) -> None:
        try:
            action = DELIVERABLE.validate_python(row["target"])
        except ValidationError as exc:
            raise DeliveryFailed(f"the stored action no longer validates: {exc}",
                                 permanent=True) from None
        body = orjson.dumps(row["payload"])
        bound = getattr(action, "timeout_seconds", SEND_TIMEOUT_SECONDS)
        try:
            async with asyncio.timeout(bound):
                if isinstance(action, WebhookAction):
                    await send_webhook(self._http, action, body, row["id"])
                else:
                    await send_email(self.settings, action, row["payload"])
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {bound:g} s") from None

    async def _record(self, row: asyncpg.Record, failure: DeliveryFailed | None) -> None:
        attempts = row["attempts"]
        context = {"delivery_id": row["id"], "event_id": row["event_id"], "kind": row["kind"],
                   "attempts": attempts}
        args: tuple[object, ...]
        error = None if failure is None else str(failure)[:ERROR_CHARS].replace("\x00", "")
        if failure is None:
            outcome, query, args = "delivered", DELIVERED, ()
        elif failure.permanent or attempts >= self.settings.delivery_attempts:
            outcome, query, args = "dead", DEAD, (error,)
        else:
            delay = self.backoff(attempts)
            outcome, query, args = "retry", RETRY, (error, delay)
            context["retry_in_seconds"] = round(delay, 2)
        try:
            status = await retry_until_available(
                partial(self._execute, query, row["id"], attempts, *args),
                transient=db.is_transient, what="alert deliveries",
                max_delay=self.settings.retry_max_delay_seconds)
        except Exception as exc:
            if not db.is_database_error(exc):
                raise
            log.error("could not record an alert delivery; it comes due again after its "
                      "lease", outcome=outcome, error=f"{type(exc).__name__}: {exc}", **context)
            return
        if status.endswith(" 0"):
            log.warning("alert delivery's lease had lapsed; another worker has it",
                        outcome=outcome, **context)
            return
        self.metrics.deliveries.labels(row["kind"], outcome).inc()
        if outcome == "delivered":
            log.info("alert action delivered", **context)
        elif outcome == "retry":
            log.warning("alert action failed; will retry", error=error, **context)
        else:
            log.error("alert action failed for good; dead-lettered", error=error, **context)

    async def _execute(self, query: str, *args: object) -> str:
        async with self.pool.acquire() as conn:
            return await conn.execute(query, *args)

    async def _drain(self) -> None:
        tasks = set(self._in_flight)
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=self.settings.drain_seconds)
        finally:
            late = [task for task in tasks if not task.done()]
            for task in late:
                task.cancel()
            if late:
                log.warning("drain deadline passed; unfinished alert deliveries come due "
                            "again after their lease", count=len(late))
                await asyncio.gather(*late, return_exceptions=True)
