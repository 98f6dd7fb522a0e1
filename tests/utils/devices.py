"""Simulated field devices for ingestor tests: provisioned accounts on the test broker that
reconnect as devices do, and the ways a fleet publishes (at once, at a steady rate)."""

from __future__ import annotations

import threading
import time

from devtools.stack.servers import RunningBroker
from shared.mqtt import status_topic
from tests.utils.mqtt_client import MqttClient, Will

# Ingestor settings for tests whose devices are load generators: they publish hundreds of
# messages per second each, far over the flood guard's default per-device limit. The
# guard still runs (a high limit, not 0), so its cost stays in the measured path.
LOAD_GENERATOR = {"INSA_INGESTOR_DEVICE_RATE_LIMIT": "1000000"}


def connect_device(broker: RunningBroker, device_id: str, *, will: bytes | None = None,
                   provision: bool = True) -> MqttClient:
    """A device with its own credentials, connected; ``will`` is its retained Last Will
    status. ``provision=False`` reuses an account the broker already has."""
    password = broker.add_device(device_id) if provision else broker.credentials[device_id]
    last_will = Will(status_topic(device_id), will, qos=1, retain=True) if will else None
    device = MqttClient(broker.port, device_id, password, will=last_will, reconnect=True)
    code = device.connect()
    if code.is_failure:
        device.close()
        raise AssertionError(f"device {device_id} could not connect: {code}")
    return device


def publish_in_background(device: MqttClient, items: list[tuple[str, bytes]]
                          ) -> threading.Thread:
    thread = threading.Thread(target=device.publish_many, args=(items,), daemon=True)
    thread.start()
    return thread


def publish_at_rate(device: MqttClient, items: list[tuple[str, bytes]],
                    per_second: float) -> threading.Thread:
    """Publish QoS 1 at a steady rate in the background, as a field fleet does."""
    def run() -> None:
        start = time.monotonic()
        mids = set()
        for n, (topic, payload) in enumerate(items):
            delay = start + n / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # Not publish(): it refuses a message published while the broker is away,
            # though paho sends it once reconnected.
            mids.add(device.publish_nowait(topic, payload))
        missing = device.wait_acked(mids, timeout=120)
        assert not missing, f"{len(missing)} never acknowledged"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
