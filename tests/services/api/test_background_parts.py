"""The API's background jobs are parts of the service, as a worker's tasks are
(shared/lifecycle.py): one that fails is logged with its name and error when it fails,
not dropped unseen at shutdown, and readiness names it from then on."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import structlog

from services.api import app as api_app
from services.api.deps import Resources
from shared.lifecycle import wait_any
from tests.fixtures.api import Api


@pytest.fixture
def breaks(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Adds a background job to the API (before the `api` fixture starts it) that fails
    once this event is set."""
    broken = asyncio.Event()

    async def brittle_job(res: Resources, stop: asyncio.Event) -> None:
        await wait_any(broken, stop)
        if not stop.is_set():
            raise RuntimeError("the job broke")

    monkeypatch.setattr(api_app, "BACKGROUND", (*api_app.BACKGROUND, brittle_job))
    return broken


async def test_a_failing_background_job_is_logged_and_fails_readiness(
        breaks: asyncio.Event, api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        for _ in range(250):  # the probe's first round: ready before the job breaks
            if (await client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert (await client.get("/health/ready")).status_code == 200
        with structlog.testing.capture_logs() as logs:
            breaks.set()
            for _ in range(250):
                failed = [e for e in logs if e["event"] == "service part failed; stopping"]
                if failed:
                    break
                await asyncio.sleep(0.02)
        assert failed == [{"event": "service part failed; stopping", "part": "brittle_job",
                           "error": "RuntimeError: the job broke", "log_level": "error"}]
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["failing"] == {"brittle_job": "failed: RuntimeError: the job broke"}
        assert (await client.get("/health/live")).status_code == 200
    # The rest of the API goes on serving until its process is restarted.
    assert (await api.admin.get("/users")).status_code == 200
