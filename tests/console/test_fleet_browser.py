"""The console's sign-in and fleet page in a real browser (Debian's Chromium): login, the
fleet filtered through its form (the URL follows), an ended session back to login and
then to the same filtered page, and a viewer offered nothing to change."""

from __future__ import annotations

import orjson
from playwright.async_api import Page, expect

from tests.fixtures.api import ADMIN_PASSWORD, PASSWORD, Api
from tests.fixtures.browser import PageLog
from tests.utils.db import execute

WELLS = [("W-001", "North"), ("W-002", "South"), ("W-003", "North")]


async def seed(db_url: str) -> None:
    for device_id, site in WELLS:
        await execute(db_url, "INSERT INTO devices (device_id, name, status, metadata, "
                              "last_seen) VALUES ($1, $2, 'online', $3, now())",
                      device_id, f"Well {device_id}", orjson.dumps({"site": site}).decode())


async def log_in(page: Page, username: str, password: str) -> None:
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    # Until the page's load event its deferred scripts (htmx) may not have run: a change
    # made before then would be a plain DOM change, unseen by htmx.
    await page.wait_for_load_state()


async def test_login_filter_and_return_after_the_session_ends(
        api: Api, db_url: str, page: Page, page_log: PageLog) -> None:
    await seed(db_url)
    await page.goto(f"{api.url}/console/")
    await expect(page).to_have_url(f"{api.url}/console/login?next=/console/")
    await log_in(page, "admin", ADMIN_PASSWORD)
    rows = page.locator("#fleet-rows tr")
    await expect(rows).to_have_count(3)

    await page.get_by_label("Site").select_option("North")
    await expect(page).to_have_url(f"{api.url}/console/?site=North")
    await expect(rows).to_have_count(2)
    await expect(page.locator("#fleet-rows")).not_to_contain_text("W-002")

    await api.app.state.resources.redis.flushdb()  # every session ends
    await page.reload()
    await expect(page).to_have_url(f"{api.url}/console/login?next=/console/%3Fsite%3DNorth")
    await log_in(page, "admin", ADMIN_PASSWORD)
    await expect(page).to_have_url(f"{api.url}/console/?site=North")
    await expect(rows).to_have_count(2)
    assert page_log.errors == [] and page_log.console_errors() == []


async def test_a_viewer_is_offered_nothing_to_change(api: Api, db_url: str,
                                                     page: Page) -> None:
    await seed(db_url)
    await api.user("viewer", "vic")
    await page.goto(f"{api.url}/console/login")
    await log_in(page, "vic", PASSWORD)
    await expect(page.locator("#fleet-rows tr")).to_have_count(3)
    nav = page.locator("header nav")
    for admin_only in ("Users", "API keys", "Audit", "Devices"):
        await expect(nav.get_by_role("link", name=admin_only)).to_have_count(0)
