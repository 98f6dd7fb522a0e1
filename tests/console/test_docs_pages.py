"""The API's documentation pages in a real browser (Debian's Chromium), as an operator on a
network without internet sees them: Swagger UI and ReDoc render the API's operations from
files the API serves itself, within their Content-Security-Policy, and the browser asks
for nothing beyond this machine (tests/fixtures/browser.py records every request)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.fixtures.api import Api
from tests.fixtures.browser import PageLog

LOGIN_PATH = "/api/v1/auth/login"
LOGIN_SECTION = "tag/auth/operation/login_api_v1_auth_login_post"  # ReDoc's id: the tag and
# the operationId FastAPI makes of the route


def policy_violations(log: PageLog) -> list[str]:
    """Chromium reports a blocked load as a console message (an error; a warning for a
    report-only policy)."""
    return [text for kind, text in log.console
            if "Content Security Policy" in text or "Content-Security-Policy" in text]


async def test_swagger_ui_renders_the_operations_from_this_origin_only(
        api: Api, page: Page, page_log: PageLog, tmp_path: Path) -> None:
    answer = await page.goto(f"{api.url}/api/v1/docs")
    assert answer is not None and answer.status == 200
    operations = page.locator(".opblock")
    await operations.first.wait_for()
    await expect(page.locator(f'.opblock-summary-path[data-path="{LOGIN_PATH}"]')).to_be_visible()
    assert await operations.count() > 40
    # The stylesheet applied: an operation's method badge is styled, not bare text.
    badge = page.locator(".opblock-post .opblock-summary-method").first
    assert await badge.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    await page.screenshot(path=tmp_path / "swagger-ui.png")

    assert policy_violations(page_log) == []
    assert page_log.console_errors() == [] and page_log.errors == []
    assert f"{api.url}/api/v1/openapi.json" in page_log.requests
    page_log.assert_local()


async def test_redoc_renders_the_operations_and_searches_from_this_origin_only(
        api: Api, page: Page, page_log: PageLog, tmp_path: Path) -> None:
    answer = await page.goto(f"{api.url}/api/v1/redoc")
    assert answer is not None and answer.status == 200
    await expect(page.locator(f'[id="{LOGIN_SECTION}"]')).to_be_attached()
    await expect(page.get_by_role("menuitem").first).to_be_visible()
    await expect(page.locator(f'[id="{LOGIN_SECTION}"] h2')).to_have_text("Log in with a password")
    # The search runs in ReDoc's blob: worker, which the policy allows.
    await page.get_by_placeholder("Search...").fill("password")
    results = page.locator('[data-role="search:results"]')
    await expect(results).to_contain_text("Log in with a password")
    await page.screenshot(path=tmp_path / "redoc.png")

    assert policy_violations(page_log) == []
    assert page_log.console_errors() == [] and page_log.errors == []
    assert f"{api.url}/api/v1/openapi.json" in page_log.requests
    page_log.assert_local()
