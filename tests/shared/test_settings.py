"""Settings validation, and compose.yaml kept consistent with the settings classes."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.alerts.settings import AlertsSettings
from services.api.settings import ApiSettings
from services.diagnostics.settings import DiagnosticsSettings
from services.ingestor.settings import IngestorSettings
from shared.broker_accounts import SERVICE_ACCOUNTS
from shared.settings import CommonSettings, ServiceSettings, load
from shared.webhooks import WebhookPolicy
from tests.utils.compose import compose_services

GOOD = {"INSA_DATABASE_URL": "postgresql://insa:a-real-long-secret@db/insa",
        "INSA_REDIS_URL": "redis://:another-long-secret@redis:6379/0",
        "INSA_INGESTOR_MQTT_PASSWORD": "mqtt-long-secret-1"}
# compose service -> the settings class of that service (besides CommonSettings)
COMPOSE_SERVICES: dict[str, type[ServiceSettings] | None] = {
    "migrate": None, "ingestor": IngestorSettings, "diagnostics": DiagnosticsSettings,
    "alerts": AlertsSettings}


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in {**GOOD, **values}.items():
        monkeypatch.setenv(key, value)


def test_good_production_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, INSA_INGESTOR_BATCH_MAX_MESSAGES="250")
    common, ingestor = load(IngestorSettings)
    assert common.env == "production" and common.log_format == "json"
    assert ingestor.batch_max_messages == 250 and ingestor.mqtt_username == "insa-ingestor"


@pytest.mark.parametrize("url", ["postgresql://insa@db/insa", "postgresql://insa:changeme@db/x",
                                 "postgresql://insa:short@db/insa"])
def test_production_refuses_missing_or_placeholder_database_password(
        monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    set_env(monkeypatch, INSA_DATABASE_URL=url)
    with pytest.raises(ValidationError, match="INSA_DATABASE_URL"):
        CommonSettings()  # type: ignore[call-arg]


def test_production_refuses_placeholder_mqtt_password(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, INSA_INGESTOR_MQTT_PASSWORD="secret")
    with pytest.raises(ValueError, match="INSA_INGESTOR_MQTT_PASSWORD"):
        load(IngestorSettings)


def test_development_accepts_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, INSA_ENV="development", INSA_DATABASE_URL="postgresql://insa@db/insa",
            INSA_INGESTOR_MQTT_PASSWORD="dev")
    common, _ = load(IngestorSettings)
    assert common.env == "development"


def test_missing_required_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as exc:
        CommonSettings()  # type: ignore[call-arg]
    assert "database_url" in str(exc.value) and "redis_url" in str(exc.value)


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose passes a variable the operator did not set on as "": the default applies,
    # or a required one is named as missing.
    set_env(monkeypatch, INSA_LOG_FORMAT="", INSA_INGESTOR_BATCH_MAX_MESSAGES="",
            INSA_API_JWT_SECRET="", INSA_API_DOCS="", INSA_REDIS_URL="")
    with pytest.raises(ValidationError, match="redis_url\n  Field required"):
        CommonSettings()  # type: ignore[call-arg]
    monkeypatch.setenv("INSA_REDIS_URL", GOOD["INSA_REDIS_URL"])
    common, ingestor = load(IngestorSettings)
    assert common.log_format == "json" and ingestor.batch_max_messages == \
        IngestorSettings.model_fields["batch_max_messages"].default
    api = ApiSettings(mqtt_password="api-long-secret-12")
    assert api.jwt_secret is None and api.docs is None


def test_one_webhook_allow_list_for_the_alerts_service_and_the_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSA_ALERTS_WEBHOOK_ALLOW", "10.20.0.0/16, hooks.plant.lan")
    alerts = AlertsSettings(mqtt_password="mqtt-long-secret-1")  # type: ignore[arg-type]
    api = ApiSettings(mqtt_password="mqtt-long-secret-1")  # type: ignore[arg-type]
    assert alerts.webhook_policy == api.webhook_policy == WebhookPolicy(
        frozenset({"hooks.plant.lan"}), (ipaddress.ip_network("10.20.0.0/16"),))
    monkeypatch.setenv("INSA_ALERTS_WEBHOOK_ALLOW", "10.20.0.0/33")
    for cls in (AlertsSettings, ApiSettings):
        with pytest.raises(ValidationError, match=r"INSA_ALERTS_WEBHOOK_ALLOW: '10\.20\.0\.0/33'"):
            cls(mqtt_password="mqtt-long-secret-1")


def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, INSA_INGESTOR_RECEIVE_MAXIMUM="0")
    with pytest.raises(ValidationError, match="receive_maximum"):
        load(IngestorSettings)


def _env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


@pytest.mark.parametrize("service", sorted(COMPOSE_SERVICES))
def test_compose_environment_matches_the_settings_classes(service: str) -> None:
    env = compose_services()[service]["environment"]
    known = _env_names(CommonSettings)
    settings_cls = COMPOSE_SERVICES[service]
    if settings_cls is not None:
        known |= _env_names(settings_cls)
    insa_vars = {k for k in env if k.startswith("INSA_")}
    assert insa_vars <= known, f"unknown variables in compose {service}: {insa_vars - known}"
    assert {"INSA_DATABASE_URL", "INSA_REDIS_URL", "INSA_ENV"} <= insa_vars
    assert env["INSA_ENV"] == "production"
    if settings_cls is not None:
        required = {f"{settings_cls.model_config['env_prefix']}{n}".upper()
                    for n, f in settings_cls.model_fields.items() if f.is_required()}
        assert required <= insa_vars


@pytest.mark.parametrize("name", sorted(compose_services()))
def test_every_compose_service_of_the_platform_has_a_healthcheck(name: str) -> None:
    spec = compose_services()[name]
    if spec.get("restart") != "no":  # one-shot jobs (migrate, broker-accounts) excepted
        assert "healthcheck" in spec, f"{name} has no healthcheck"
    for dep in (spec.get("depends_on") or {}).values():
        assert dep["condition"] in ("service_healthy", "service_completed_successfully")


def test_compose_gives_every_broker_account_its_secret() -> None:
    env = compose_services()["broker-accounts"]["environment"]
    wanted = {"INSA_MQTT_PASSWORD_" + a.removeprefix("insa-").upper() for a in SERVICE_ACCOUNTS}
    assert set(env) == wanted
