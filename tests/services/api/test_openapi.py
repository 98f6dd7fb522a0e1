"""The OpenAPI schema declares the answers the API gives beyond each route's own: the
limits' 429 and an unavailable dependency's 503 everywhere, and the broker's refusal (400)
where the broker's accounts are changed. Built from the app alone: no server is started."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.settings import CommonSettings

BROKER_ACCOUNT_ROUTES = {("post", "/api/v1/devices"),  # with provision: true
                         ("post", "/api/v1/devices/{device_id}/credentials"),
                         ("delete", "/api/v1/devices/{device_id}/credentials"),
                         ("delete", "/api/v1/devices/{device_id}"),
                         ("post", "/api/v1/gateways"),  # with provision: true
                         ("delete", "/api/v1/gateways/{gateway_id}"),
                         ("post", "/api/v1/gateways/{gateway_id}/credentials"),
                         ("delete", "/api/v1/gateways/{gateway_id}/credentials"),
                         ("post", "/api/v1/subscribers"),
                         ("patch", "/api/v1/subscribers/{name}"),
                         ("delete", "/api/v1/subscribers/{name}"),
                         ("post", "/api/v1/subscribers/{name}/consumers"),
                         ("post", "/api/v1/subscribers/{name}/consumers/{consumer}/rotate"),
                         ("delete", "/api/v1/subscribers/{name}/consumers/{consumer}")}


def schema() -> dict[str, Any]:
    common = CommonSettings.model_validate({
        "env": "development", "database_url": "postgresql://127.0.0.1:1/unused",
        "redis_url": "redis://127.0.0.1:1/0"})
    settings = ApiSettings.model_validate({"mqtt_password": "unused-in-this-test"})
    return create_app(common, settings, CollectorRegistry()).openapi()


def test_every_operation_declares_the_limits_and_the_broker_answers() -> None:
    operations = {(method, path): op for path, item in schema()["paths"].items()
                  for method, op in item.items()}
    assert len(operations) > 40
    for (method, path), op in operations.items():
        for status in ("429", "503"):
            assert status in op["responses"], f"{method} {path} {status}"
        assert ("400" in op["responses"]) == ((method, path) in BROKER_ACCOUNT_ROUTES), \
            f"{method} {path}"
    login = operations[("post", "/api/v1/auth/login")]["responses"]["429"]
    assert "Retry-After" in login["headers"]
