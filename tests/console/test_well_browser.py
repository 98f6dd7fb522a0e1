"""The well page in a real browser (Debian's Chromium): from the fleet to a well, its
sections loaded by htmx, its trend charts drawn by uPlot from the series endpoint, a
range change asking again, the charts following the window's width, and a command sent
through the form; nothing loaded from elsewhere and no script error."""

from __future__ import annotations

from datetime import UTC, datetime

from playwright.async_api import Page, expect

from tests.console.test_fleet_browser import log_in
from tests.console.test_well import minute_data, seed_diagnoses, well
from tests.fixtures.api import ADMIN_PASSWORD, Api
from tests.fixtures.browser import PageLog
from tests.utils.db import execute, fetch
from tests.utils.telemetry import seed
from tests.utils.waiting import wait_until


async def test_a_well_from_the_fleet_with_its_charts_and_sections(
        api: Api, db_url: str, page: Page, page_log: PageLog) -> None:
    await well(api)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await seed(db_url, "W-7", minute_data(now, 8))
    await execute(db_url, "UPDATE devices SET status = 'online', last_seen = now() "
                          "WHERE device_id = 'W-7'")
    await seed_diagnoses(db_url, "W-7")
    await page.goto(f"{api.url}/console/login")
    await log_in(page, "admin", ADMIN_PASSWORD)
    await page.get_by_role("link", name="W-7").click()
    await expect(page).to_have_url(f"{api.url}/console/wells/W-7")

    charts = page.locator("#charts .chart")
    await expect(charts).to_have_count(2)  # the well's two metrics, both chosen
    await expect(charts.first.locator("canvas")).to_have_count(1)
    note = page.locator("#chart-note")
    await expect(note).to_contain_text("2 min buckets")  # 24 h of minutes > the width
    await page.get_by_label("7d").check()
    await expect(note).to_contain_text("min buckets (avg, band min")
    await page.get_by_label("1h").check()
    await expect(note).to_have_text("raw readings")
    await page.get_by_label("flow_rate").uncheck()
    await expect(charts).to_have_count(1)

    await expect(page.locator("#diagnoses-body")).to_contain_text("Gas lock")
    await expect(page.locator("#connections-body")).to_contain_text("No status change")
    await expect(page.locator("#rejects-body")).to_contain_text("No message refused")

    box = await charts.first.locator("canvas").bounding_box()
    assert box is not None
    wide = box["width"]
    await page.set_viewport_size({"width": 800, "height": 900})  # a tablet
    await wait_until(lambda: charts.first.locator("canvas").bounding_box(),
                     lambda box: box is not None and box["width"] < min(wide, 800),
                     what="the chart to follow the window")

    form = page.locator(".command-form")
    await form.get_by_label("Command").fill("restart")
    await form.get_by_label("Parameters (JSON object)").fill("{not json")
    await form.get_by_role("button", name="Send").click()
    await expect(page.locator("#commands-body .field-error")).to_contain_text("not JSON")
    await page.locator(".command-form").get_by_label("Parameters (JSON object)").fill(
        '{"delay_seconds": 5}')
    await page.locator(".command-form").get_by_role("button", name="Send").click()
    await expect(page.locator("#commands-body .notice")).to_contain_text("restart")
    sent = await fetch(db_url, "SELECT name, params FROM commands")
    assert [(r["name"], r["params"]) for r in sent] == [("restart", '{"delay_seconds": 5}')]
    # The browser logs the form's 422 (the field error) as a failed load: that one only.
    assert page_log.errors == []
    assert [e for e in page_log.console_errors() if "status of 422" not in e] == []
    assert any("/series?" in url for url in page_log.requests)
    assert not [u for u in page_log.requests if "/series?" in u and "width=" not in u]
