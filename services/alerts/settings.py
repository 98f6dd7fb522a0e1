"""Alert engine settings (`INSA_ALERTS_*`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import StreamConsumerSettings
from shared.streams import DIAGNOSTICS, TELEMETRY
from shared.webhooks import WebhookPolicy


class AlertsSettings(StreamConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_ALERTS_", extra="ignore")

    mqtt_username: str = "insa-alerts"
    http_port: int = Field(8003, ge=0, le=65535)
    telemetry_stream: str = TELEMETRY
    diagnostics_stream: str = DIAGNOSTICS
    # Scale-out (PARTITIONS, PARTITION) as diagnostics: replica k of N evaluates the
    # devices hashing to k, in its own consumer groups.
    consumer: str = "alerts-1"
    # Time-based conditions (pending `for`, no data, escalation, re-notify) are checked
    # this often; an alert fires at most this late after its `for` elapsed.
    tick_seconds: float = Field(1.0, gt=0, le=60)
    # Device types and tags (rule scopes) are re-read this often; rules on NOTIFY.
    catalog_refresh_seconds: float = Field(30.0, gt=0)
    retry_max_delay_seconds: float = Field(5.0, gt=0)
    probe_interval_seconds: float = Field(5.0, gt=0)

    # Actions (services/alerts/actions.py).
    delivery_attempts: int = Field(6, ge=1, le=50)
    delivery_backoff_seconds: float = Field(2.0, gt=0)      # doubles per try
    delivery_backoff_max_seconds: float = Field(300.0, gt=0)
    delivery_concurrency: int = Field(8, ge=1, le=256)
    smtp_host: str | None = None  # e-mail actions fail (and dead-letter) without it
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_sender: str = "insa-alerts@localhost"
    # Internal hosts and networks webhooks may reach (comma-separated names, addresses,
    # CIDRs); public addresses need no entry. Also read by the API (ApiSettings).
    webhook_allow: str = ""

    @field_validator("webhook_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        WebhookPolicy.parse(value)  # refused at start, naming the bad entry
        return value

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy.parse(self.webhook_allow)

    @property
    def group(self) -> str:
        return self.consumer_group("alerts")
