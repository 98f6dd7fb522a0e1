"""A simulated field device for tests: its own credentials, QoS 1 publishes that wait for PUBACK."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from devtools.stack.servers import RunningBroker

# Ingestor settings for tests whose devices are load generators: they publish hundreds of
# messages per second each, far over the flood guard's default per-device limit. The
# guard still runs (a high limit, not 0), so its cost stays in the measured path.
LOAD_GENERATOR = {"INSA_INGESTOR_DEVICE_RATE_LIMIT": "1000000"}


class Device:
    def __init__(self, broker: RunningBroker, device_id: str, *, will: bytes | None = None,
                 provision: bool = True) -> None:
        self.device_id = device_id
        password = broker.add_device(device_id) if provision else broker.credentials[device_id]
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device_id,
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set(device_id, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if will is not None:
            self.client.will_set(f"insa/devices/{device_id}/status", will, qos=1, retain=True)
        self._connected = threading.Event()
        self._refused: ReasonCode | None = None
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.acked: set[int] = set()  # packet ids the broker acknowledged (PUBACK)
        # Back within a second or two after a broker restart, as field devices are.
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._connected.wait(10) or self._refused is not None:
            self.close()
            raise AssertionError(f"device {device_id} could not connect: {self._refused}")

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode,
                    _p: object) -> None:
        self._refused = reason if reason.is_failure else None
        self._connected.set()

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode,
                    _p: object) -> None:
        if not reason.is_failure:
            self.acked.add(mid)

    def publish(self, suffix: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        """Publish to insa/devices/<id>/<suffix> and wait for the broker's PUBACK."""
        info = self.client.publish(f"insa/devices/{self.device_id}/{suffix}", payload, qos=qos,
                                   retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {suffix} not acknowledged"

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(f"insa/devices/{self.device_id}/{s}", p, qos=1)
                 for s, p in items]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """Drop the connection without DISCONNECT, so the broker sends the Last Will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


def publish_at_rate(device: Device, items: list[tuple[str, bytes]],
                    per_second: float) -> threading.Thread:
    """Publish QoS 1 at a steady rate in the background, as a field fleet does."""
    def run() -> None:
        start = time.monotonic()
        infos = []
        for n, (suffix, payload) in enumerate(items):
            delay = start + n / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            infos.append(device.client.publish(f"insa/devices/{device.device_id}/{suffix}",
                                               payload, qos=1))
        # Not wait_for_publish(): it raises for a message published while the broker was
        # away, though paho sends it once reconnected.
        deadline = time.monotonic() + 120
        mids = {info.mid for info in infos}
        while not mids <= device.acked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mids <= device.acked, f"{len(mids - device.acked)} never acknowledged"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
