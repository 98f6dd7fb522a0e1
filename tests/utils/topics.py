"""Device topics by suffix, for tests that keep tables of ("telemetry/<metric>", payload)."""

from __future__ import annotations

from shared.mqtt import (
    command_ack_topic,
    command_topic,
    config_topic,
    status_topic,
    telemetry_topic,
)


def device_topic(device_id: str, suffix: str) -> str:
    """The topic of ``suffix`` ("telemetry", "telemetry/<metric>", "status", "command", ...)
    for a device: the contract's own builders in shared/mqtt.py where it has one."""
    kind, _, metric = suffix.partition("/")
    if kind == "telemetry":
        return telemetry_topic(device_id, metric or None)
    builders = {"status": status_topic, "command": command_topic, "config": config_topic,
                "command/ack": command_ack_topic}
    return builders[suffix](device_id)
