"""Ingestor settings (`INSA_INGESTOR_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_INGESTOR_", extra="ignore")

    mqtt_username: str = "insa-ingestor"
    http_port: int = Field(8001, ge=0, le=65535)
    # Fixed per replica so the broker keeps the session (and queues) across restarts.
    client_id: str = "insa-ingestor-1"
    # MQTT 5 shared-subscription group; empty subscribes directly (one replica).
    share_group: str = "ingestors"
    session_expiry_seconds: int = Field(7 * 24 * 3600, ge=0)
    # Unacked messages the broker may have in flight to us: bounds our memory.
    receive_maximum: int = Field(4000, ge=10, le=65535)
    batch_max_messages: int = Field(1000, ge=1)
    batch_max_age_ms: float = Field(25.0, gt=0)
    auto_provision: bool = True
    max_payload_bytes: int = Field(256 * 1024, ge=256)
    reject_keep_bytes: int = Field(4096, ge=0)
    max_future_skew_seconds: float = Field(300.0, ge=0)
    offline_after_seconds: float = Field(600.0, gt=0)
    stream: str = "insa:telemetry"
    # Entries every consumer group is done with are trimmed each interval; past this
    # length the oldest go even if unread (counted and logged as an error).
    stream_max_len: int = Field(1_000_000, ge=1000)
    stream_trim_interval_seconds: float = Field(10.0, gt=0)
    # Upper bound on how long one flush retries before it logs louder; it never gives up.
    retry_max_delay_seconds: float = Field(5.0, gt=0)
    reject_log_window_seconds: float = Field(60.0, gt=0)
