"""A simulated field device for tests: its own credentials, QoS 1 publishes that wait for PUBACK."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from shared.devstack.servers import RunningBroker


class Device:
    def __init__(self, broker: RunningBroker, device_id: str, *, will: bytes | None = None,
                 provision: bool = True) -> None:
        self.device_id = device_id
        password = broker.add_device(device_id) if provision else broker.credentials[device_id]
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{device_id}-t",
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set(device_id, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if will is not None:
            self.client.will_set(f"insa/devices/{device_id}/status", will, qos=1, retain=True)
        self._connected = threading.Event()
        self._refused: ReasonCode | None = None
        self.client.on_connect = self._on_connect
        # The broker re-reads its password file on SIGHUP asynchronously: retry briefly.
        for _ in range(50):
            self._connected.clear()
            self.client.connect("127.0.0.1", broker.port)
            self.client.loop_start()
            if self._connected.wait(5) and self._refused is None:
                return
            self.client.loop_stop()
            self.client.disconnect()
            threading.Event().wait(0.1)
        raise AssertionError(f"device {device_id} could not connect: {self._refused}")

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode,
                    _p: object) -> None:
        self._refused = reason if reason.is_failure else None
        self._connected.set()

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
