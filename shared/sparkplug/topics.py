"""Sparkplug B 3.0 topics, `spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]`,
and the Primary Host Application's STATE messages (`spBv1.0/STATE/<host_id>`, JSON).

`parse_topic` answers None for a topic outside the namespace (and for STATE topics, which
`state_host_id` reads), so a subscriber can route on it; a topic inside the namespace that
breaks the rules raises SparkplugError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from shared.sparkplug import SparkplugError

NAMESPACE = "spBv1.0"
STATE = "STATE"


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        """The D* types name a device after the edge node; the N* types must not."""
        return self.value.startswith("D")


@dataclass(frozen=True, slots=True)
class Topic:
    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None

    def __str__(self) -> str:
        parts = [NAMESPACE, self.group_id, self.message_type.value, self.edge_node_id]
        return "/".join([*parts, self.device_id] if self.device_id is not None else parts)


def parse_topic(topic: str) -> Topic | None:
    """The parts of an edge node's or device's topic; None outside `spBv1.0/` and for STATE."""
    parts = topic.split("/")
    if parts[0] != NAMESPACE or (len(parts) > 1 and parts[1] == STATE):
        return None
    if len(parts) not in (4, 5):
        raise SparkplugError(f"Sparkplug topic {topic!r} does not have 4 or 5 levels")
    _, group_id, kind, edge_node_id, *device = parts
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise SparkplugError(f"Sparkplug topic {topic!r}: unknown message type {kind!r}") \
            from None
    if message_type.is_device != bool(device):
        raise SparkplugError(f"Sparkplug topic {topic!r}: {kind} "
                             + ("needs a device id" if message_type.is_device
                                else "takes no device id"))
    _check_id(group_id, "group id")
    _check_id(edge_node_id, "edge node id")
    if device:
        _check_id(device[0], "device id")
    return Topic(group_id, message_type, edge_node_id, device[0] if device else None)


def ncmd_topic(group_id: str, edge_node_id: str) -> str:
    return str(Topic(_check_id(group_id, "group id"), MessageType.NCMD,
                     _check_id(edge_node_id, "edge node id")))


def dcmd_topic(group_id: str, edge_node_id: str, device_id: str) -> str:
    return str(Topic(_check_id(group_id, "group id"), MessageType.DCMD,
                     _check_id(edge_node_id, "edge node id"), _check_id(device_id, "device id")))


def state_topic(host_id: str) -> str:
    """Where the Primary Host Application publishes its STATE (retained, QoS 1; its Will)."""
    return f"{NAMESPACE}/{STATE}/{_check_id(host_id, 'host id')}"


def state_host_id(topic: str) -> str | None:
    """The host id of a STATE topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != NAMESPACE or parts[1] != STATE:
        return None
    return _check_id(parts[2], "host id")


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """`{"online": true, "timestamp": T}`, the Sparkplug 3.0 STATE payload (UTF-8 JSON)."""
    if not isinstance(online, bool):
        raise SparkplugError(f"STATE online {online!r} is not a boolean")
    _check_timestamp(timestamp_ms)
    return json.dumps({"online": online, "timestamp": timestamp_ms},
                      separators=(",", ":")).encode()


def parse_state(payload: bytes) -> tuple[bool, int]:
    """(online, timestamp in ms) of a STATE payload."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SparkplugError("STATE payload is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise SparkplugError("STATE payload is not a JSON object")
    online, timestamp = body.get("online"), body.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugError(f"STATE payload: online {online!r} is not a boolean")
    return online, _check_timestamp(timestamp)


def _check_timestamp(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise SparkplugError(f"STATE timestamp {value!r} is not milliseconds since the epoch")
    return value


def _check_id(value: str, what: str) -> str:
    # Ids are single topic levels: not empty, and no MQTT separator or wildcard.
    if not isinstance(value, str) or not value or any(c in value for c in "/+#"):
        raise SparkplugError(f"Sparkplug {what} {value!r} must be a non-empty topic level "
                             "without '/', '+' or '#'")
    return value
