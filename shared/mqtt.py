"""The contract's MQTT topic names (built and parsed here only), the device and metric
name pattern, and the TLS context every connection uses."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import partition, which parses topics with this module
    from shared.settings import CommonSettings

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
NAME_RE = re.compile(NAME_PATTERN)

# Broker accounts of the platform's services start with this; no device id (nor API user
# name) may, in any case: `INSA-api` reads as `insa-api` in a log or the audit trail.
RESERVED_PREFIX = "insa-"


def is_reserved_name(name: str) -> bool:
    return name.lower().startswith(RESERVED_PREFIX)


# The topic tree, built here only (docs/payloads.md). A filter is a builder given a
# wildcard: `telemetry_topic(ANY)` is "insa/devices/+/telemetry".
ROOT = "insa"
ANY, REST = "+", "#"  # MQTT's one-level and multi-level wildcards


def device_topic(device_id: str, *rest: str) -> str:
    return "/".join((ROOT, "devices", device_id, *rest))


def telemetry_topic(device_id: str, metric: str | None = None) -> str:
    return device_topic(device_id, "telemetry", metric) if metric else \
        device_topic(device_id, "telemetry")


def status_topic(device_id: str) -> str:
    return device_topic(device_id, "status")


def command_topic(device_id: str) -> str:
    return device_topic(device_id, "command")


def command_ack_topic(device_id: str) -> str:
    return device_topic(device_id, "command", "ack")


def config_topic(device_id: str) -> str:
    return device_topic(device_id, "config")


def diagnostics_topic(device_id: str) -> str:
    return f"{ROOT}/diagnostics/{device_id}"


def alerts_topic(severity: str, device_id: str) -> str:
    return f"{ROOT}/alerts/{severity}/{device_id}"


# Rules' own MQTT actions publish under this prefix (the broker grants no other).
NOTIFY_PREFIX = f"{ROOT}/notify/"

TELEMETRY_FILTER = telemetry_topic(ANY)
METRIC_FILTER = telemetry_topic(ANY, ANY)
STATUS_FILTER = status_topic(ANY)
COMMAND_ACK_FILTER = command_ack_topic(ANY)
DIAGNOSTICS_FILTER = diagnostics_topic(REST)
ALERTS_FILTER = f"{ROOT}/alerts/{REST}"
NOTIFY_FILTER = NOTIFY_PREFIX + REST


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    device_id: str
    kind: str  # "telemetry" | "metric" | "status"
    metric: str | None = None


def topic_device_id(topic: str) -> str:
    """The device id of a device topic (its third level), without checking the rest."""
    return topic.split("/", 3)[2] if topic.count("/") >= 2 else topic


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """Split an inbound device topic; None when it is not one the ingestor takes."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT or parts[1] != "devices":
        return None
    device_id, kind = parts[2], parts[3]
    if kind == "telemetry" and len(parts) == 4:
        return DeviceTopic(device_id, "telemetry")
    if kind == "telemetry" and len(parts) == 5:
        return DeviceTopic(device_id, "metric", parts[4])
    if kind == "status" and len(parts) == 4:
        return DeviceTopic(device_id, "status")
    return None


def parse_command_ack_topic(topic: str) -> str | None:
    """The device id of a command answer's topic; None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:2] != [ROOT, "devices"] or parts[3:] != ["command", "ack"]:
        return None
    return parts[2]


def tls_context(common: CommonSettings) -> ssl.SSLContext | None:
    if not common.mqtt_tls:
        return None
    return ssl.create_default_context(
        cafile=str(common.mqtt_ca_file) if common.mqtt_ca_file else None)
