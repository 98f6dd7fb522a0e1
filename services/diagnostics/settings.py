"""Diagnostics settings (`INSA_DIAGNOSTICS_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StreamConsumerSettings
from shared.streams import TELEMETRY


class DiagnosticsSettings(StreamConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_DIAGNOSTICS_", extra="ignore")

    mqtt_username: str = "insa-diagnostics"
    http_port: int = Field(8002, ge=0, le=65535)
    stream: str = TELEMETRY
    # Scale-out (PARTITIONS, PARTITION) as the ingestor: replica k of N judges the devices
    # hashing to k, in its own consumer group, so each device's readings reach one engine.
    consumer: str = "diagnostics-1"
    # At start, and for a device first seen since, stored telemetry up to where it was
    # last judged is replayed silently, so a restart does not blind the engine.
    replay_readings: int = Field(300, ge=0, le=10_000)
    limits_refresh_seconds: float = Field(60.0, gt=0)
    max_devices: int = Field(100_000, ge=1)
    retry_max_delay_seconds: float = Field(5.0, gt=0)
    probe_interval_seconds: float = Field(5.0, gt=0)

    @property
    def group(self) -> str:
        return self.consumer_group("diagnostics")
