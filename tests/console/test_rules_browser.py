"""The rules page in a real browser (Debian's Chromium): a rule of another type drafted in
the form (its fields swapped in by htmx), backtested over stored telemetry before it is
saved, a validation message at its field, created, then disabled in place from the list;
nothing loaded from elsewhere, no script error (the page's CSP allows nothing inline)."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.console.test_fleet_browser import log_in
from tests.console.test_rules import HOT, seed_hot_wells
from tests.fixtures.api import PASSWORD, Api
from tests.fixtures.browser import PageLog
from tests.utils.db import fetchval


async def test_draft_backtest_create_and_disable_a_rule(api: Api, db_url: str, page: Page,
                                                        page_log: PageLog) -> None:
    await seed_hot_wells(db_url)
    await api.user("engineer", "erin")
    await page.goto(f"{api.url}/console/login?next=/console/rules/new")
    await page.get_by_label("Username", exact=True).fill("erin")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="New rule")).to_be_visible()

    form = page.locator("#rule-form")
    await form.get_by_label("Name", exact=True).fill("motor hot on average")
    await form.get_by_label("Type", exact=True).select_option("window")
    # The window type's fields, swapped in; what was typed stays.
    await expect(form.get_by_label("Statistic", exact=True)).to_be_visible()
    await expect(form.get_by_label("Name", exact=True)).to_have_value("motor hot on average")
    await form.get_by_label("Metric", exact=True).fill("motor_temp")
    await form.get_by_label("Statistic", exact=True).select_option("max")
    await form.get_by_label("Window (s)", exact=True).fill("120")
    await form.get_by_label("Compared", exact=True).select_option(">")
    await form.get_by_label("Value", exact=True).fill("100")

    await form.get_by_label("Severity", exact=True).select_option("critical")
    await form.get_by_label("Metric", exact=True).fill("motor temp")  # not a metric name
    await form.get_by_role("button", name="Run backtest").click()
    await expect(page.locator("#metric-error")).to_contain_text(
        "rule.metric: String should match pattern")
    await page.locator("#rule-form").get_by_label("Metric", exact=True).fill("motor_temp")
    await page.locator("#rule-form").get_by_role("button", name="Run backtest").click()
    result = page.locator("#backtest-result")
    await expect(result).to_contain_text("3 alerts")  # W-1, W-2 and the PCP W-3
    await expect(result.locator("table.per-device tbody tr")).to_have_count(3)
    assert await fetchval(db_url, "SELECT count(*) FROM rules") == 0

    await page.locator("#rule-form").get_by_role("button", name="Create").click()
    await expect(page.get_by_text("Saved.")).to_be_visible()
    rule_id = await fetchval(db_url, "SELECT id FROM rules WHERE name = 'motor hot on average'")
    await expect(page).to_have_url(f"{api.url}/console/rules/{rule_id}")

    await page.get_by_role("link", name="Rules", exact=True).first.click()
    row = page.locator(f"#rule-{rule_id}")
    await expect(row).to_contain_text("enabled")
    await row.get_by_role("button", name="Disable").click()
    await expect(row.get_by_role("button", name="Enable")).to_be_visible()
    assert await fetchval(db_url, "SELECT enabled FROM rules WHERE id = $1", rule_id) is False
    # Chromium logs the one 422 (the refused draft, swapped in as htmx is told to): no
    # other message, and no script error (a CSP violation would be one).
    assert page_log.errors == []
    assert page_log.console_errors() == [
        "Failed to load resource: the server responded with a status of 422 "
        "(Unprocessable Entity)"]


async def test_a_write_refused_after_a_login_elsewhere_says_so(api: Api, db_url: str,
                                                              page: Page) -> None:
    """Logging in again in another tab (its login page opened before) ends this tab's
    session: the cookie now names a new one, with another CSRF token. The switch's post
    is refused 403, and the page says why instead of nothing."""
    rule_id = (await api.admin.post("/rules", json=HOT)).json()["id"]
    await api.user("engineer", "erin")
    other_tab = await page.context.new_page()
    await other_tab.goto(f"{api.url}/console/login")
    await page.goto(f"{api.url}/console/login?next=/console/rules")
    await log_in(page, "erin", PASSWORD)
    row = page.locator(f"#rule-{rule_id}")
    await expect(row).to_contain_text("enabled")
    await log_in(other_tab, "erin", PASSWORD)
    await expect(other_tab.get_by_role("link", name="Rules")).to_be_visible()

    await row.get_by_role("button", name="Disable").click()
    message = page.get_by_role("alert")
    await expect(message).to_be_visible()
    await expect(message).to_contain_text("Not done (403)")
    await expect(message).to_contain_text("reload the page")
    await expect(row).to_contain_text("enabled")  # the row is as it was: nothing swapped
    assert await fetchval(db_url, "SELECT enabled FROM rules WHERE id = $1", rule_id) is True
