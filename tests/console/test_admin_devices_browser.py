"""The devices page's main flow in a real browser (Debian's Chromium): an engineer
registers a device through the form (a refusal first, shown at its input), gets its MQTT
password once, and rotates it after the confirmation; the passwords are checked against
the test's broker. Nothing on these pages breaks the CSP or leaves the machine."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.console.admin_pages import connects
from tests.fixtures.api import PASSWORD, Api
from tests.fixtures.browser import PageLog
from tests.utils.mqtt_client import Clients


async def test_register_then_rotate_in_a_browser(api: Api, clients: Clients, page: Page,
                                                 page_log: PageLog) -> None:
    await api.user("engineer", "eng")
    await page.goto(f"{api.url}/console/login")
    await page.get_by_label("Username").fill("eng")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    nav = page.locator("header nav")
    await expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    await nav.get_by_role("link", name="Devices").click()
    await page.get_by_role("link", name="Register a device").click()

    await page.get_by_label("Device id").fill("W-41")
    await page.get_by_label("Tags").fill("field=north pad-3")
    await page.locator('input[name="attributes.vsd_min_hz"]').fill("60")
    await page.locator('input[name="attributes.vsd_max_hz"]').fill("50")
    await page.get_by_role("button", name="Register").click()
    await expect(page.locator("#attributes-error")).to_have_text(
        "vsd_min_hz must be below vsd_max_hz")
    await page.locator('input[name="attributes.vsd_min_hz"]').fill("30")
    await expect(page.get_by_label("Create its MQTT account now")).to_be_checked()
    await page.get_by_role("button", name="Register").click()

    await expect(page.locator("h1")).to_have_text("W-41 registered")
    first = (await page.locator(".secret-value").text_content() or "").strip()
    assert connects(clients, "W-41", first)
    await page.get_by_role("link", name="Done").click()
    await expect(page).to_have_url(f"{api.url}/console/devices/W-41/edit")
    await expect(page.get_by_label("Tags")).to_have_value("field=north pad-3")
    assert first not in await page.content(), "the password is shown once only"

    await page.get_by_role("link", name="Issue new credentials").click()
    await page.get_by_role("button", name="Issue new credentials").click()
    await expect(page.locator("h1")).to_have_text("New credentials for W-41")
    second = (await page.locator(".secret-value").text_content() or "").strip()
    assert second != first and connects(clients, "W-41", second)
    assert not connects(clients, "W-41", first)
    # The one refused submission is the only error the browser reports (no CSP report).
    assert page_log.errors == []
    assert page_log.console_errors() == [
        "Failed to load resource: the server responded with a status of 422 "
        "(Unprocessable Entity)"]
