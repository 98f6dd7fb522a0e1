"""Where a webhook may go and what signs it (shared/webhooks.py), through the delivery
worker against a real receiver on 127.0.0.1: internal targets refused unless allowed, a
name resolved once and that address connected, no redirects, keys only from the
webhook-secret namespace."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from typing import Any

import anyio
import asyncpg
import orjson
import pytest
import structlog

from shared import webhooks
from tests.services.alerts.deliveries import (
    SECRET_ENV,
    alert_event,
    counted,
    queue,
    running,
    settings,
    settled,
)
from tests.utils.receivers import Receiver


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
