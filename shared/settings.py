"""Settings: `INSA_*` for what every service shares, `INSA_<SERVICE>_*` for each service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.partition import Partition
from shared.streams import ConsumerSettings

Environment = Literal["development", "test", "production"]

# Passwords that must never reach production (and anything shorter than 12 characters).
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "changethis", "password", "secret", "insa", "admin",
     "postgres", "redis", "mosquitto", "default"})
MIN_SECRET_LENGTH = 12


def is_placeholder(secret: str | None) -> bool:
    return secret is None or secret.lower() in PLACEHOLDER_SECRETS \
        or len(secret) < MIN_SECRET_LENGTH


class CommonSettings(BaseSettings):
    """What every service shares: environment, logging and where the infrastructure is."""

    # An empty variable is unset (compose passes an unset variable on as "").
    model_config = SettingsConfigDict(env_prefix="INSA_", extra="ignore", env_ignore_empty=True)

    env: Environment = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    database_url: SecretStr
    redis_url: SecretStr
    mqtt_host: str = "localhost"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        if self.env == "development":
            return self
        for name in ("database_url", "redis_url"):
            url = urlsplit(getattr(self, name).get_secret_value())
            if is_placeholder(url.password):
                raise ValueError(
                    f"INSA_{name.upper()} has no password or a placeholder one; set a real "
                    f"secret (at least {MIN_SECRET_LENGTH} characters) outside development")
        if self.mqtt_tls and self.mqtt_ca_file is not None and not self.mqtt_ca_file.exists():
            raise ValueError(f"INSA_MQTT_CA_FILE {self.mqtt_ca_file} does not exist")
        return self


class ServiceSettings(BaseSettings):
    """Per-service base: broker account, HTTP port for health and metrics, drain deadline."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)  # as above

    mqtt_username: str
    mqtt_password: SecretStr
    http_host: str = "0.0.0.0"
    http_port: int = Field(ge=0, le=65535)
    drain_seconds: float = Field(10.0, gt=0)

    def check_secrets(self, env: Environment) -> None:
        if env != "development" and is_placeholder(self.mqtt_password.get_secret_value()):
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(f"{prefix}MQTT_PASSWORD is a placeholder; set a real secret")


class PartitionedSettings(ServiceSettings):
    """Scale-out by device: replica `partition` of `partitions` keeps the devices whose id
    hashes to it (shared/partition.py), so each device's data reaches one replica, in order."""

    partitions: int = Field(1, ge=1, le=64)
    partition: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _partition_in_range(self) -> PartitionedSettings:
        if self.partition >= self.partitions:
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(f"{prefix}PARTITION {self.partition} must be below "
                             f"{prefix}PARTITIONS {self.partitions}")
        return self

    def owned(self) -> Partition:
        return Partition(self.partition, self.partitions)

    def consumer_group(self, name: str) -> str:
        """Partitioned replicas read a stream in groups of their own, each all entries."""
        return name if self.partitions == 1 else f"{name}-{self.partition}of{self.partitions}"


class StreamConsumerSettings(PartitionedSettings):
    """A service reading Redis streams in consumer groups (shared/streams.py)."""

    # The consumer's name within its group: stable across restarts of one replica, so it
    # re-reads its own pending entries at once instead of waiting for the idle claim.
    consumer: str
    batch: int = Field(500, ge=1, le=10_000)
    claim_idle_seconds: float = Field(60.0, gt=0)
    max_deliveries: int = Field(5, ge=1)

    def consumer_settings(self) -> ConsumerSettings:
        return ConsumerSettings(batch=self.batch, max_deliveries=self.max_deliveries,
                                claim_idle_ms=int(self.claim_idle_seconds * 1000))


S = TypeVar("S", bound=ServiceSettings)


def load(service_cls: type[S]) -> tuple[CommonSettings, S]:
    """Read both settings classes from the environment and refuse placeholder secrets."""
    common = CommonSettings()  # type: ignore[call-arg]  # values come from the environment
    service = service_cls()  # type: ignore[call-arg]
    service.check_secrets(common.env)
    return common, service
