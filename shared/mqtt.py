"""The contract's MQTT topic names (built and parsed here only), the device and metric
name pattern, and the TLS context every connection uses."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from functools import lru_cache
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


def gateway_topic(gateway_id: str, *rest: str) -> str:
    """A gateway's own tree (docs/payloads.md, "Gateways"): `insa/gateways/<id>/...`."""
    return "/".join((ROOT, "gateways", gateway_id, *rest))


def child_topic(gateway_id: str, device_id: str, *rest: str) -> str:
    """A gateway's child device's topic: the device topic's tail under the gateway's tree,
    `insa/gateways/<gateway>/devices/<device>/telemetry` and so on."""
    return gateway_topic(gateway_id, "devices", device_id, *rest)


def downlink_topic(device_id: str, gateway_id: str | None, kind: str) -> str:
    """Where a device hears its `command` or `config`: its own topic, or its gateway's
    tree when it is a gateway's child."""
    if gateway_id is None:
        return device_topic(device_id, kind)
    return child_topic(gateway_id, device_id, kind)


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
GATEWAY_TELEMETRY_FILTER = gateway_topic(ANY, "telemetry")
GATEWAY_STATUS_FILTER = gateway_topic(ANY, "status")
CHILD_TELEMETRY_FILTER = child_topic(ANY, ANY, "telemetry")
CHILD_METRIC_FILTER = child_topic(ANY, ANY, "telemetry", ANY)
CHILD_STATUS_FILTER = child_topic(ANY, ANY, "status")
CHILD_COMMAND_ACK_FILTER = child_topic(ANY, ANY, "command", "ack")


# What the ingestor takes: devices' own topics, and gateways' for themselves and children;
# of one device or gateway (a partitioned replica's), or, given ANY, of all of them.
def device_filters(device_id: str) -> tuple[str, ...]:
    return (telemetry_topic(device_id), telemetry_topic(device_id, ANY),
            status_topic(device_id))


def gateway_filters(gateway_id: str) -> tuple[str, ...]:
    return (gateway_topic(gateway_id, "telemetry"), gateway_topic(gateway_id, "status"),
            child_topic(gateway_id, ANY, "telemetry"),
            child_topic(gateway_id, ANY, "telemetry", ANY),
            child_topic(gateway_id, ANY, "status"))


DEVICE_FILTERS = device_filters(ANY)
GATEWAY_FILTERS = gateway_filters(ANY)


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """An inbound topic the ingestor takes. `device_id` is the device's, or on a gateway's
    own topics (kind gateway_telemetry, gateway_status) the gateway's; `gateway` is set
    for everything a gateway publishes."""

    device_id: str
    kind: str  # "telemetry" | "metric" | "status" | "gateway_telemetry" | "gateway_status"
    metric: str | None = None
    gateway: str | None = None


def topic_device_id(topic: str) -> str:
    """The device (or gateway) id of a device topic (its third level), without checking
    the rest: a gateway's topics all go where the gateway's own do."""
    return topic.split("/", 3)[2] if topic.count("/") >= 2 else topic


def _device_kind(device_id: str, rest: list[str], gateway: str | None) -> DeviceTopic | None:
    if rest == ["telemetry"]:
        return DeviceTopic(device_id, "telemetry", gateway=gateway)
    if len(rest) == 2 and rest[0] == "telemetry":
        return DeviceTopic(device_id, "metric", rest[1], gateway)
    if rest == ["status"]:
        return DeviceTopic(device_id, "status", gateway=gateway)
    return None


# The longest topic whose names all fit NAME_PATTERN:
# insa/gateways/<name>/devices/<name>/telemetry/<name>. Only topics up to it are cached,
# so the cache stays a few MB whatever a device publishes to (a topic may be 64 KiB).
LONGEST_DEVICE_TOPIC = len(f"{ROOT}/gateways//devices//telemetry/") + 3 * 128


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """Split an inbound device or gateway topic; None when it is not one the ingestor
    takes."""
    if len(topic) > LONGEST_DEVICE_TOPIC:
        return _split_device_topic(topic)  # a name in it is too long: rejected later
    return _split_device_topic_cached(topic)


def _split_device_topic(topic: str) -> DeviceTopic | None:
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT:
        return None
    if parts[1] == "devices":
        return _device_kind(parts[2], parts[3:], None)
    if parts[1] != "gateways":
        return None
    gateway = parts[2]
    if len(parts) == 4 and parts[3] in ("telemetry", "status"):
        return DeviceTopic(gateway, f"gateway_{parts[3]}", gateway=gateway)
    if len(parts) >= 6 and parts[3] == "devices":
        return _device_kind(parts[4], parts[5:], gateway)
    return None


# A fleet's topics repeat; splitting each was ~3 % of the ingestor's CPU.
_split_device_topic_cached = lru_cache(maxsize=1 << 14)(_split_device_topic)


def parse_command_ack_topic(topic: str) -> tuple[str, str | None] | None:
    """(device id, gateway id or None) of a command answer's topic, from the device
    itself or its gateway; None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:2] == [ROOT, "devices"] and parts[3:] == ["command", "ack"]:
        return parts[2], None
    if (len(parts) == 7 and parts[:2] == [ROOT, "gateways"] and parts[3] == "devices"
            and parts[5:] == ["command", "ack"]):
        return parts[4], parts[2]
    return None


def tls_context(common: CommonSettings) -> ssl.SSLContext | None:
    if not common.mqtt_tls:
        return None
    return ssl.create_default_context(
        cafile=str(common.mqtt_ca_file) if common.mqtt_ca_file else None)
