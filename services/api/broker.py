"""The API's one broker connection (account `insa-api`): dynamic-security commands for
device provisioning, downlink publishes (commands, config), HTTP-ingested readings, and
the devices' command answers. One connection, because the broker binds the account to
one client id: a second connection would knock the first off.

paho's network thread does the I/O (as in `BrokerAdmin`, whose command handling this
reuses); async callers wait in a worker thread, and received answers reach the event
loop through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from shared.broker_accounts import CONTROL_RESPONSE_TOPIC
from shared.broker_admin import BrokerAdmin
from shared.errors import DependencyUnavailable

ACK_TOPIC = "insa/devices/+/command/ack"
Received = Callable[[str, bytes], object]


class ApiBroker(BrokerAdmin):
    def __init__(self, host: str, port: int, username: str, password: str,
                 on_message: Received, **kwargs: Any) -> None:
        super().__init__(host, port, password, username, **kwargs)
        self._received = on_message
        self._client.on_publish = self._on_publish
        self._client.reconnect_delay_set(1, 10)
        self._refusals: dict[int, str] = {}
        self._refusals_lock = threading.Lock()

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself from then on."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    async def check(self) -> None:
        """The readiness probe."""
        if not self.connected:
            raise ConnectionError("not connected to the broker")

    # --- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason: ReasonCode, props: object) -> None:
        super()._on_connect(client, userdata, flags, reason, props)
        if not reason.is_failure:
            client.subscribe(ACK_TOPIC, qos=1)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage
                    ) -> None:
        if msg.topic == CONTROL_RESPONSE_TOPIC:
            super()._on_message(client, userdata, msg)
        else:
            self._received(msg.topic, bytes(msg.payload))

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode,
                    _p: object) -> None:
        if reason.is_failure:
            with self._refusals_lock:
                self._refusals[mid] = str(reason)

    # --- async API ------------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      timeout: float = 5.0) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it (PUBACK)."""
        def send() -> None:
            if not self.connected:
                raise DependencyUnavailable("not connected to the broker")
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise DependencyUnavailable(f"publish failed: {paho.error_string(info.rc)}")
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise DependencyUnavailable("the broker did not acknowledge in time")
            with self._refusals_lock:
                refused = self._refusals.pop(info.mid, None)
            if refused is not None:  # the platform's ACL, not the caller's fault
                raise DependencyUnavailable(f"the broker refused the publish on {topic}: "
                                            f"{refused}")

        await asyncio.to_thread(send)

    async def run(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Dynamic-security commands (provisioning), answered by the broker."""
        if not self.connected:
            raise DependencyUnavailable("not connected to the broker")
        return await asyncio.to_thread(self.execute, *commands)

    async def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """One of BrokerAdmin's helpers (create_device, rotate_password, ...)."""
        if not self.connected:
            raise DependencyUnavailable("not connected to the broker")
        return await asyncio.to_thread(method, *args)
