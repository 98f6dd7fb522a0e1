"""Device topics by suffix, for tests that keep tables of ("telemetry/<metric>", payload)."""

from __future__ import annotations

from shared.mqtt import status_topic, telemetry_topic


def device_topic(device_id: str, suffix: str) -> str:
    """The topic of ``suffix`` ("telemetry", "telemetry/<metric>", "status", "command", ...)
    for a device: the contract's own builders in shared/mqtt.py where it has one."""
    kind, _, metric = suffix.partition("/")
    if kind == "telemetry":
        return telemetry_topic(device_id, metric or None)
    if suffix == "status":
        return status_topic(device_id)
    return f"insa/devices/{device_id}/{suffix}"  # command, config, command/ack: no builder
