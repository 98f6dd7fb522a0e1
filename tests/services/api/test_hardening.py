"""What a client can cost the API and what it can see without credentials: bodies over the
limit refused before they are read, connections that send nothing or trickle their headers
closed, docs, schema and metrics as the environment exposes them, and the security headers
on every answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from typing import Any

import httpx
import pytest

from services.api.routes.ingest import MAX_BODY_BYTES as INGEST_MAX
from tests.fixtures.api import ADMIN_PASSWORD, Api
from tests.utils.raw_http import Peer, request

MiB = 1024 * 1024
SCRAPE = "a-scrape-token-for-the-tests"


@pytest.mark.parametrize("api_overrides", [{
    "header_timeout_seconds": 1.0, "max_connections": 24, "live_max_clients": 8}])
async def test_bodies_over_the_limit_and_idle_connections_cost_nothing(api: Api) -> None:
    # 200 MB declared, unauthenticated, 64 KiB of it sent: answered 413 without waiting
    # for the rest, not a 401 after reading it all.
    peer = await Peer.open(api.url)
    await peer.send(request("POST", "/api/v1/devices", {
        "Content-Type": "application/json", "Content-Length": str(200 * MiB)}) + b"[" * 65536)
    answer = await peer.answer()
    assert answer.status == 413
    assert answer.json()["error"] == {"code": "payload_too_large",
                                      "message": f"request body over {MiB} bytes"}
    assert answer.headers["connection"] == "close"
    await asyncio.wait_for(peer.closed.wait(), 5)

    # The same streamed (chunked, no length): cut off once past the limit.
    peer = await Peer.open(api.url)
    sent = 0
    await peer.send(request("POST", "/api/v1/devices", {
        "Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    while sent < 200 * MiB and await peer.send(chunk) and b"\r\n\r\n" not in peer.data:
        sent += 65536
    status, headers = await peer.head()
    assert status == 413 and headers["connection"] == "close"
    assert sent < 32 * MiB, f"{sent} bytes sent before the answer"

    # HTTP ingest keeps its own, lower limit (the ingestor's largest message).
    device = (await api.admin.post("/devices", json={"device_id": "W-big"})).json()
    assert device["device_id"] == "W-big"
    peer = await Peer.open(api.url)
    await peer.send(request("POST", "/api/v1/telemetry", {
        "X-API-Key": await api.key("device", device_id="W-big"),
        "Content-Type": "application/json", "Content-Length": str(INGEST_MAX + 1)}))
    answer = await peer.answer()
    assert answer.status == 413 and str(INGEST_MAX) in answer.json()["error"]["message"]

    # Connections that send nothing, or trickle a header every 0.3 s, hold the server's
    # connection slots (beyond, 503) until the headers deadline closes them.
    started = time.monotonic()
    idle = [await Peer.open(api.url) for _ in range(24)]

    async def trickle(peer: Peer) -> None:
        await peer.send(b"GET /health/live HTTP/1.1\r\n")
        while await peer.send(b"X-Slow: 1\r\n"):
            await asyncio.sleep(0.3)

    trickling = [asyncio.create_task(trickle(peer)) for peer in idle[::2]]
    fresh = await Peer.open(api.url)
    await fresh.send(request("GET", "/health/live"))
    assert (await fresh.answer()).status == 503  # uvicorn's own: every slot is held
    await asyncio.wait_for(asyncio.gather(*(peer.closed.wait() for peer in idle)), 5)
    await asyncio.gather(*trickling)
    assert time.monotonic() - started >= 0.9  # closed by the deadline, not at once
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{api.url}/health/live")).status_code == 200


@pytest.mark.parametrize(("api_env", "api_overrides"), [
    ("production", {"metrics_token": SCRAPE}),
    ("production", {"metrics_token": SCRAPE, "docs": "authenticated"}),
    ("test", {}),
], ids=["production", "production-authenticated-docs", "test"])
async def test_docs_metrics_and_headers_as_the_environment_exposes_them(
        api: Api, api_env: str, api_overrides: dict[str, Any]) -> None:
    docs = api_overrides.get("docs", "off" if api_env == "production" else "public")
    anonymous = httpx.AsyncClient(base_url=api.url)
    admin = {"Authorization": api.admin.headers["Authorization"]}
    try:
        pages = [await anonymous.get(f"/api/v1/{page}") for page in ("docs", "redoc")]
        schema = await anonymous.get("/api/v1/openapi.json")
        metrics = await anonymous.get("/metrics")
        if docs == "public":
            assert [p.status_code for p in pages] == [200, 200]
            assert schema.status_code == 200
            for page in pages:
                assert_policy_allows(page)
        else:
            assert [p.status_code for p in pages] == [404, 404]
            assert schema.status_code == {"off": 404, "authenticated": 401}[docs]
            with_credential = await anonymous.get("/api/v1/openapi.json", headers=admin)
            assert with_credential.status_code == {"off": 404, "authenticated": 200}[docs]
        if api_env == "production":
            assert metrics.status_code == 401
            assert metrics.json()["error"]["code"] == "unauthorized"
            wrong = await anonymous.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            scraped = await anonymous.get("/metrics",
                                          headers={"Authorization": f"Bearer {SCRAPE}"})
            assert scraped.status_code == 200 and "insa_api_requests_total" in scraped.text
        else:
            assert metrics.status_code == 200

        # Every answer, JSON or not, success or error, carries the headers.
        answers = [metrics, schema, await anonymous.get("/health/ready"),
                   await anonymous.get("/api/v1/devices"), await anonymous.get("/nowhere")]
        for answer in answers:
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["content-security-policy"].startswith("default-src 'none';")
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert "script-src" not in answers[2].headers["content-security-policy"]

        # Tokens and keys: never stored by a browser or a proxy.
        login = await anonymous.post("/api/v1/auth/login", json={
            "username": "admin", "password": ADMIN_PASSWORD})
        refreshed = await anonymous.post("/api/v1/auth/refresh", json={
            "refresh_token": login.json()["refresh_token"]})
        key = await api.admin.post("/api-keys", json={"name": "k", "role": "viewer"})
        assert [r.status_code for r in (login, refreshed, key)] == [200, 200, 201]
        assert {r.headers["cache-control"] for r in (login, refreshed, key)} == {"no-store"}
    finally:
        await anonymous.aclose()


def assert_policy_allows(page: httpx.Response) -> None:
    """The page's policy names every script and stylesheet origin it loads, the hash of
    each inline script, and lets it fetch the schema from its own origin; it is still
    never framed."""
    policy = dict(part.strip().partition(" ")[::2]
                  for part in page.headers["content-security-policy"].split(";"))
    html = page.content
    for src in re.findall(rb'<script src="(https://[^/"]+)/', html):
        assert src.decode() in policy["script-src"].split(), src
    for href in re.findall(rb'<link[^>]*?href="(https://[^/"]+)/[^"]*"[^>]*>', html):
        tag_sources = policy["style-src"] + " " + policy["img-src"]
        assert href.decode() in tag_sources.split(), href
    for script in re.findall(rb"<script>(.*?)</script>", html, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"].split()
    assert "'self'" in policy["connect-src"].split()
    assert policy["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
