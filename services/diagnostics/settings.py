"""Diagnostics settings (`INSA_DIAGNOSTICS_*`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
from shared.streams import TELEMETRY


class DiagnosticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_DIAGNOSTICS_", extra="ignore")

    mqtt_username: str = "insa-diagnostics"
    http_port: int = Field(8002, ge=0, le=65535)
    stream: str = TELEMETRY
    # Scale-out as the ingestor: replica k of N judges the devices hashing to k, in its own
    # consumer group, so each device's readings reach one engine, in order.
    partitions: int = Field(1, ge=1, le=64)
    partition: int = Field(0, ge=0)
    # The consumer's name within its group: stable across restarts of one replica, so it
    # re-reads its own pending entries at once instead of waiting for the idle claim.
    consumer: str = "diagnostics-1"
    batch: int = Field(500, ge=1, le=10_000)
    claim_idle_seconds: float = Field(60.0, gt=0)
    max_deliveries: int = Field(5, ge=1)
    # At start, and for a device first seen since, stored telemetry up to where it was
    # last judged is replayed silently, so a restart does not blind the engine.
    replay_readings: int = Field(300, ge=0, le=10_000)
    limits_refresh_seconds: float = Field(60.0, gt=0)
    max_devices: int = Field(100_000, ge=1)
    retry_max_delay_seconds: float = Field(5.0, gt=0)
    probe_interval_seconds: float = Field(5.0, gt=0)

    @property
    def group(self) -> str:
        return "diagnostics" if self.partitions == 1 else \
            f"diagnostics-{self.partition}of{self.partitions}"

    @model_validator(mode="after")
    def _partition_in_range(self) -> DiagnosticsSettings:
        if self.partition >= self.partitions:
            raise ValueError(f"INSA_DIAGNOSTICS_PARTITION {self.partition} must be below "
                             f"INSA_DIAGNOSTICS_PARTITIONS {self.partitions}")
        return self
