"""An error no handler takes, on a console page: answered with the console's 500 page and
logged once, by the console. Nothing propagates to the server, which would log the same
traceback a second time (as it does for what Starlette's last-resort layer re-raises)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from structlog.testing import capture_logs

from services.api import errors
from services.api.console import install_console


def app_with_a_broken_page() -> FastAPI:
    app = FastAPI()
    errors.install(app)
    install_console(app)

    @app.get("/console/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    return app


async def test_an_unexpected_error_is_a_page_and_logged_once() -> None:
    # raise_app_exceptions: what the app lets out is raised here, as a server would log it.
    transport = httpx.ASGITransport(app=app_with_a_broken_page(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        with capture_logs() as logged:
            answer = await client.get("/console/broken")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("text/html")
    assert "500 · Something went wrong" in answer.text
    assert "it has been logged" in answer.text and "a bug" not in answer.text
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    [entry] = [e for e in logged if e["log_level"] in ("error", "critical")]
    assert (entry["event"], entry["path"], entry["exc_info"]) == (
        "unhandled error in the console", "/console/broken", True)
