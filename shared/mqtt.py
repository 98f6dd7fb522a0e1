"""The contract's MQTT topic names, and the TLS context every connection uses."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

from shared.settings import CommonSettings

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
NAME_RE = re.compile(NAME_PATTERN)

# Broker accounts of the platform's services start with this; no device id (nor API user
# name) may, in any case: `INSA-api` reads as `insa-api` in a log or the audit trail.
RESERVED_PREFIX = "insa-"


def is_reserved_name(name: str) -> bool:
    return name.lower().startswith(RESERVED_PREFIX)


TELEMETRY_FILTER = "insa/devices/+/telemetry"
METRIC_FILTER = "insa/devices/+/telemetry/+"
STATUS_FILTER = "insa/devices/+/status"


def telemetry_topic(device_id: str, metric: str | None = None) -> str:
    base = f"insa/devices/{device_id}/telemetry"
    return f"{base}/{metric}" if metric else base


def status_topic(device_id: str) -> str:
    return f"insa/devices/{device_id}/status"


def diagnostics_topic(device_id: str) -> str:
    return f"insa/diagnostics/{device_id}"


def alerts_topic(severity: str, device_id: str) -> str:
    return f"insa/alerts/{severity}/{device_id}"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    device_id: str
    kind: str  # "telemetry" | "metric" | "status"
    metric: str | None = None


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """Split an inbound device topic; None when it is not one the ingestor takes."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "insa" or parts[1] != "devices":
        return None
    device_id, kind = parts[2], parts[3]
    if kind == "telemetry" and len(parts) == 4:
        return DeviceTopic(device_id, "telemetry")
    if kind == "telemetry" and len(parts) == 5:
        return DeviceTopic(device_id, "metric", parts[4])
    if kind == "status" and len(parts) == 4:
        return DeviceTopic(device_id, "status")
    return None


def tls_context(common: CommonSettings) -> ssl.SSLContext | None:
    if not common.mqtt_tls:
        return None
    return ssl.create_default_context(
        cafile=str(common.mqtt_ca_file) if common.mqtt_ca_file else None)
