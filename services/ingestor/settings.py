"""Ingestor settings (`INSA_INGESTOR_*`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.broker_accounts import SPARKPLUG_ACCOUNT
from shared.settings import PartitionedSettings
from shared.units import PLAUSIBLE


class IngestorSettings(PartitionedSettings):
    model_config = SettingsConfigDict(env_prefix="INSA_INGESTOR_", extra="ignore")

    # Also the MQTT client id (the broker binds each account to its own): one account per
    # replica, so each keeps its persistent session (and queue) across restarts.
    mqtt_username: str = "insa-ingestor"
    http_port: int = Field(8001, ge=0, le=65535)
    # Scale-out (partitions, partition): docs/architecture.md, "Subscriptions".
    session_expiry_seconds: int = Field(7 * 24 * 3600, ge=0)
    # Partitioned: how often a replica looks for newly registered devices and gateways
    # to subscribe to (services/ingestor/subscriptions.py).
    subscription_refresh_seconds: float = Field(1.0, gt=0)
    # Unacked messages the broker may have in flight to us: bounds our memory. Room for
    # the batch filling beside two committing, so intake seldom pauses at full speed.
    receive_maximum: int = Field(8000, ge=10, le=65535)
    batch_max_messages: int = Field(2000, ge=1)
    batch_max_age_ms: float = Field(25.0, gt=0)
    # Batches committing at once, each on a pooled connection of its own: while one waits
    # on PostgreSQL (its COPY, its commit's fsync) the next is mapped and written.
    commits_in_flight: int = Field(2, ge=1, le=16)
    auto_provision: bool = True
    max_payload_bytes: int = Field(256 * 1024, ge=256)
    reject_keep_bytes: int = Field(4096, ge=0)
    max_future_skew_seconds: float = Field(300.0, ge=0)
    # Older readings are rejected (timestamp_too_old): a backlog may be old, 1970 is a fault.
    max_past_age_days: float = Field(3650.0, gt=0)
    offline_after_seconds: float = Field(600.0, gt=0)
    # Plausibility bounds per metric in its canonical unit (docs/payloads.md, "Rejects"),
    # as JSON: {"pip": [0, 5000]} replaces pip's, {"torque": [0, 100]} adds one, {"pip":
    # null} turns pip's off. Merged over shared/units.py's PLAUSIBLE.
    plausible_bounds: dict[str, tuple[float, float] | None] = Field(default_factory=dict)
    stream: str = "insa:telemetry"
    # Entries every consumer group is done with are trimmed each interval; past this
    # length the oldest go even if unread (counted and logged as an error).
    stream_max_len: int = Field(1_000_000, ge=1000)
    stream_trim_interval_seconds: float = Field(10.0, gt=0)
    # Cap on the jittered backoff delay between retries while PostgreSQL or Redis is down
    # (shared/retry.py); retrying never gives up.
    retry_max_delay_seconds: float = Field(5.0, gt=0)
    reject_log_window_seconds: float = Field(60.0, gt=0)
    # Flood guard: messages per second each device may publish, sustained and in a burst
    # (a backlog is one message with an array); over it, the device's broker account is
    # suspended for a cool-down, doubled for each repeat within a day. 0 turns it off.
    device_rate_limit: float = Field(100.0, ge=0)
    device_burst: int = Field(5000, ge=1)
    # A gateway's account, which publishes for many devices: the same, wider.
    gateway_rate_limit: float = Field(2000.0, gt=0)
    gateway_burst: int = Field(50000, ge=1)
    suspend_seconds: float = Field(300.0, gt=0)
    suspend_max_seconds: float = Field(86400.0, gt=0)
    # Sparkplug B Primary Host Application (docs/architecture.md, "Sparkplug B host"): on
    # when a host id is set, on one replica only, with an account of its own (a clean
    # session, which the ingestor's persistent one cannot be).
    sparkplug_host_id: str = ""
    sparkplug_username: str = SPARKPLUG_ACCOUNT
    sparkplug_password: SecretStr = SecretStr("")
    # How long a gap in an edge node's seq may stay open before the messages held behind it
    # are taken and a rebirth asked for; what asks for a rebirth; at most one per interval.
    sparkplug_reorder_timeout_seconds: float = Field(2.0, gt=0)
    sparkplug_rebirth_on_gap: bool = True
    sparkplug_rebirth_on_unknown: bool = True
    sparkplug_rebirth_min_interval_seconds: float = Field(10.0, ge=0)
    # How often PostgreSQL and Redis are probed for readiness, also while idle.
    probe_interval_seconds: float = Field(5.0, gt=0)

    @field_validator("plausible_bounds")
    @classmethod
    def _low_below_high(cls, bounds: dict[str, tuple[float, float] | None]
                        ) -> dict[str, tuple[float, float] | None]:
        for metric, bound in bounds.items():
            if bound is not None and not bound[0] < bound[1]:
                raise ValueError(f"plausible_bounds[{metric!r}]: low must be below high")
        return bounds

    def plausible(self) -> dict[str, tuple[float, float]]:
        merged = {**PLAUSIBLE, **self.plausible_bounds}
        return {metric: bound for metric, bound in merged.items() if bound is not None}
