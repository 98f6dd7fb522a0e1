"""The alarms page in a real browser (Debian's Chromium), with an alert raised by the real
pipeline: a device's MQTT readings through the ingestor to the alert engine, for a rule
created through the API. An operator has the Alarms page open before anything fires;
the alert appears by the page's live refresh; she acknowledges it with a note from its
row, and the state, her name and the note are stored, and published by the engine; the
alert's own page tells its history. Nothing is loaded from elsewhere, no script error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from devtools.stack.servers import RunningRedis
from devtools.stack.service_process import ServiceProcess
from tests.console.test_fleet_browser import log_in
from tests.fixtures.api import PASSWORD, Api
from tests.fixtures.browser import PageLog
from tests.services.api.test_alerts import FAST, RULE, published, send
from tests.utils.db import fetchrow
from tests.utils.mqtt_client import Clients, MqttClient
from tests.utils.waiting import wait_until


@contextlib.asynccontextmanager
async def hot(device: MqttClient, device_id: str) -> AsyncIterator[None]:
    """A reading over the rule's threshold every half second: the alert fires once the
    engine has the rule, and stays open (acknowledged) afterwards."""
    async def keep_sending() -> None:
        while True:
            send(device, device_id, motor_temp=105.0)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(keep_sending())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.timeout(180)
async def test_an_engine_alarm_appears_live_and_is_acknowledged_with_a_note(
        api: Api, ingestor: ServiceProcess, alerts_factory: Callable[..., ServiceProcess],
        clients: Clients, redis_server: RunningRedis, db_url: str, page: Page,
        page_log: PageLog) -> None:
    alerts_factory(**FAST)
    erin = await api.user("engineer", "erin")
    await api.user("operator", "ana")
    device = clients.device("well-b1")
    send(device, "well-b1", motor_temp=90.0)  # the well exists, and is fine

    await page.goto(f"{api.url}/console/login")
    await log_in(page, "ana", PASSWORD)
    await page.get_by_role("link", name="Alarms").click()
    await expect(page).to_have_url(f"{api.url}/console/alarms")
    rows = page.locator("#alarm-rows")
    await expect(rows).to_contain_text("No alarm matches.")

    created = await erin.post("/rules", json={**RULE, "name": "motor hot",
                                              "severity": "critical"})
    assert created.status_code == 201, created.text
    async with hot(device, "well-b1"):
        # The engine's alert, shown by the rows' refresh (every 10 s), no reload.
        row = rows.locator("tr", has_text="motor hot")
        await expect(row).to_contain_text("well-b1")
        await expect(row).to_contain_text("firing")
        alert = await fetchrow(db_url, "SELECT id, state FROM alerts "
                                       "WHERE device_id = 'well-b1'")
        assert alert is not None and alert["state"] == "firing"
        alert_id = alert["id"]
        await expect(row.get_by_role("link", name="well-b1")).to_have_attribute(
            "href", "/console/wells/well-b1")

        await row.get_by_text("Act", exact=True).click()
        await row.get_by_label("Note").fill("crew sent to well-b1")
        # The rows' refresh waits while a form in them is open: the note stays.
        await page.wait_for_timeout(12_000)
        await expect(row.get_by_label("Note")).to_have_value("crew sent to well-b1")
        await row.get_by_role("button", name="Acknowledge").click()
        # The row answers in place: acknowledged, by her.
        await expect(row).to_contain_text("Acknowledged.")
        await expect(row).to_contain_text("acknowledged by user:ana")

        stored = await fetchrow(db_url, "SELECT state, acknowledged_by FROM alerts "
                                        "WHERE id = $1", alert_id)
        assert stored is not None
        assert (stored["state"], stored["acknowledged_by"]) == ("acknowledged", "user:ana")
        event = await fetchrow(db_url, "SELECT actor, note FROM alert_events WHERE "
                                       "alert_id = $1 AND kind = 'acknowledged'", alert_id)
        assert event is not None
        assert (event["actor"], event["note"]) == ("user:ana", "crew sent to well-b1")

        def acknowledged(events: list[dict[str, Any]]) -> bool:
            return any(e["event"] == "acknowledged" for e in events)

        events = await wait_until(lambda: _async(published, redis_server.url), acknowledged,
                                  what="the acknowledgement published by the engine")
        [out] = [e for e in events if e["event"] == "acknowledged"]
        assert (out["alert_id"], out["actor"], out["note"], out["state"]) == \
            (alert_id, "user:ana", "crew sent to well-b1", "acknowledged")

        # Its own page: the history, with who did what.
        await row.get_by_role("link", name=f"#{alert_id} motor hot").click()
        await expect(page).to_have_url(f"{api.url}/console/alarms/{alert_id}")
        history = page.locator("table.events tbody tr")
        await expect(history.last).to_contain_text("acknowledged")
        await expect(history.last).to_contain_text("user:ana")
        await expect(history.last).to_contain_text("crew sent to well-b1")
        await expect(history.first).to_contain_text("firing")
        await expect(page.get_by_role("link", name="motor hot")).to_have_attribute(
            "href", f"/console/rules/{created.json()['id']}")

    await page.set_viewport_size({"width": 800, "height": 900})  # a tablet: still usable
    await expect(page.get_by_role("button", name="Resolve")).to_be_visible()
    assert page_log.errors == [] and page_log.console_errors() == []


async def _async(probe: Callable[[str], Any], *args: Any) -> Any:
    return probe(*args)
