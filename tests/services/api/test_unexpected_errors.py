"""An error no handler takes, on an API path: answered 500 in the error format, logged once,
counted in insa_api_requests_total, and not passed on to the server (which would log the
same traceback again). The app is the real one (create_app), with one broken route added."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.settings import CommonSettings


async def test_an_unexpected_error_is_answered_counted_and_logged_once() -> None:
    common = CommonSettings.model_validate({
        "env": "development", "database_url": "postgresql://127.0.0.1:1/unused",
        "redis_url": "redis://127.0.0.1:1/0"})
    registry = CollectorRegistry()
    app = create_app(common, ApiSettings.model_validate({"mqtt_password": "unused"}),
                     registry)

    async def broken() -> None:
        raise RuntimeError("a bug with a secret in it")

    app.add_api_route("/api/v1/broken", broken)
    # raise_app_exceptions: what the app lets out is raised here, as a server would log it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        with capture_logs() as logged:
            answer = await client.get("/api/v1/broken")
    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "internal",
                                       "message": "internal error; it has been logged"}}
    assert "default-src" in answer.headers["content-security-policy"]
    [entry] = [e for e in logged if e["log_level"] in ("error", "critical")]
    assert (entry["event"], entry["path"], entry["exc_info"]) == (
        "unhandled error", "/api/v1/broken", True)
    assert registry.get_sample_value("insa_api_requests_total", {
        "method": "GET", "route": "/api/v1/broken", "status": "500"}) == 1
