"""paho-mqtt 2.x driven by the asyncio loop, with acks held until the data is committed.

aiomqtt acknowledges QoS 1 on receipt; the ingestor must not, so it runs paho
with `manual_ack=True` on the service's own event loop (socket readiness
callbacks, as in paho's asyncio example) and acks each message after its rows
are committed and streamed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.ingestor.intake import Delivery
from shared.broker_accounts import CONTROL_RESPONSE_TOPIC
from shared.health import Health
from shared.lifecycle import wait_any
from shared.mqtt import METRIC_FILTER, STATUS_FILTER, TELEMETRY_FILTER
from shared.partition import Partition
from shared.retry import Stopped, retry_until_available

log = structlog.get_logger(__name__)
READS_PER_WAKEUP = 50
CLOSE_DRAIN_SECONDS = 2.0
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0


class MqttSource:
    def __init__(self, client: paho.Client, host: str, port: int, *, partition: Partition,
                 session_expiry: int, receive_maximum: int, health: Health,
                 on_skipped: Callable[[], None] = lambda: None,
                 on_control: Callable[[bytes], None] = lambda _payload: None) -> None:
        self.client = client
        self.host, self.port = host, port
        self.partition = partition
        self.on_skipped = on_skipped
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.health = health
        self.on_delivery: Callable[[Delivery], None] = lambda _d: None  # set by run()
        self.on_control = on_control
        self.connection = 0
        self.connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._misc: asyncio.Task[None] | None = None
        self._socket: ReadBufferedSocket | None = None
        self.paused = False
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    # --- acking -------------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> bool:
        """Ack if the message came on the live connection; otherwise the broker redelivers."""
        if delivery.qos == 0:
            return True
        if delivery.connection != self.connection or not self.connected.is_set():
            return False
        self.client.ack(delivery.mid, delivery.qos)
        return True

    def publish(self, topic: str, payload: bytes) -> bool:
        """QoS 1 on the live connection; False when there is none (the caller retries)."""
        if not self.connected.is_set():
            return False
        return self.client.publish(topic, payload, qos=1).rc == paho.MQTT_ERR_SUCCESS

    # --- connection management ----------------------------------------------------------
    async def run(self, stop: asyncio.Event, deliver: Callable[[Delivery], None]) -> None:
        """Hand each message of this replica's devices to `deliver`; reconnect (backing off
        while refused or unreachable, at once after a drop) until `stop` is set."""
        self.on_delivery = deliver
        while not stop.is_set():
            try:
                await retry_until_available(
                    lambda: self._connect(stop), transient=_is_connect_failure, what="mqtt",
                    initial=RECONNECT_MIN_SECONDS, max_delay=RECONNECT_MAX_SECONDS, stop=stop,
                    on_failure=lambda exc: self.health.failing("mqtt", f"connect failed: {exc}"))
            except Stopped:
                break
            await wait_any(stop, self._lost)
        await self.disconnect()

    async def disconnect(self, timeout: float = 5.0) -> None:
        """Send the queued acks, then DISCONNECT; paho closes the socket once it is out."""
        if self.client.socket() is None:
            return
        deadline = self._loop.time() + timeout
        self.client.disconnect()
        while self.client.socket() is not None and self.client.want_write() \
                and self._loop.time() < deadline:
            self.client.loop_write()
            await asyncio.sleep(0.01)  # the socket buffer may be full: let it drain

    async def _connect(self, stop: asyncio.Event) -> None:
        """Connect and wait for the broker's answer; a refusal raises, to be retried."""
        self._lost.clear()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect(self.host, self.port, keepalive=30, clean_start=False,
                            properties=props)
        await wait_any(self.connected, self._lost, stop)
        if self._lost.is_set():
            raise NotConnected("connection closed before the broker accepted it")

    def _on_connect(self, client: paho.Client, _u: object, flags: paho.ConnectFlags,
                    reason: ReasonCode, _p: Properties | None) -> None:
        if reason.is_failure:
            self.health.failing("mqtt", f"broker refused connection: {reason}")
            log.error("mqtt connection refused", reason=str(reason))
            return
        self.connection += 1
        self.connected.set()
        self.health.ok("mqtt")
        log.info("mqtt connected", session_present=flags.session_present,
                 connection=self.connection)
        # Plain subscriptions in a persistent session: the broker keeps them, and queues for
        # them, across its own restarts ($share ones it forgets in Mosquitto 2.0). Re-sent on
        # every connect in case the session expired. Retained statuses only when the
        # subscription is new (their age is unknown, so replaying them would mislead).
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(f, options) for f in (TELEMETRY_FILTER, METRIC_FILTER, STATUS_FILTER)]
                         + [(CONTROL_RESPONSE_TOPIC, SubscribeOptions(qos=1))])

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: paho.DisconnectFlags,
                       reason: ReasonCode, _p: Properties | None) -> None:
        self.connected.clear()
        self.health.failing("mqtt", f"disconnected: {reason}")
        log.warning("mqtt disconnected", reason=str(reason))
        self._lost.set()

    def _on_message(self, client: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == CONTROL_RESPONSE_TOPIC:  # answers to the flood guard's commands
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            self.on_control(cast(bytes, msg.payload))
            return
        if not self.partition.owns_topic(msg.topic):
            # Another replica's device: its own session has a copy of this message.
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            self.on_skipped()
            return
        payload = cast(bytes, msg.payload)  # always bytes on receipt
        self.on_delivery(Delivery(msg.topic, payload, msg.mid, msg.qos, bool(msg.dup),
                                  self.connection))

    # --- socket plumbing (paho's asyncio integration; paho types sockets as a private
    # protocol, hence Any) ----------------------------------------------------------------
    def _on_socket_open(self, client: paho.Client, _u: object, sock: Any) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        buffered = ReadBufferedSocket(sock)
        # paho reads each packet with three or more small recv() calls and one packet per
        # loop_read(); serving them from one large read and draining the buffer per wake-up
        # saves syscalls and an event-loop turn per message (see docs/benchmarks.md).
        client._sock = buffered  # paho 2.x has no public hook for this
        self._socket = buffered
        # A new connection must read its CONNACK even while intake is paused; the first
        # delivery past the window pauses it again.
        self.paused = False
        self._loop.add_reader(sock, self._on_readable, buffered)
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-misc")

    def pause(self) -> None:
        """Stop reading the socket: TCP backpressure makes the broker queue the rest."""
        if not self.paused and self._socket is not None:
            self.paused = True
            self._loop.remove_reader(self._socket)
            log.debug("mqtt intake paused")

    def resume(self) -> None:
        if self.paused and self._socket is not None:
            self.paused = False
            self._loop.add_reader(self._socket, self._on_readable, self._socket)
            if self._socket.buffered:
                self._loop.call_soon(self._on_readable, self._socket)
            log.debug("mqtt intake resumed")

    def _on_readable(self, buffered: ReadBufferedSocket) -> None:
        if self.paused or self.client.socket() is not buffered:
            return
        self.client.loop_read()
        # Bounded, so a broker that never stops sending cannot starve the flush task; what
        # is left in the buffer gets another turn (the socket may not become readable again).
        for _ in range(READS_PER_WAKEUP):
            if not buffered.buffered or self.paused or self.client.socket() is not buffered:
                return
            self.client.loop_read()
        if buffered.buffered:
            self._loop.call_soon(self._on_readable, buffered)

    def _on_socket_close(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._socket = None
        if self._misc is not None:
            self._misc.cancel()

    def _on_register_write(self, client: paho.Client, _u: object, sock: Any) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._loop.remove_writer(sock)

    async def _misc_loop(self) -> None:
        while self.client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1)


class ReadBufferedSocket:
    """A socket whose recv() is served from one large read; everything else is the socket's."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._data) - self._pos

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            data = self._sock.recv(1 << 18)  # raises BlockingIOError when nothing is there
            if not data:
                return data  # connection closed
            self._data, self._pos = data, 0
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        """Close without a TCP reset: closing with unread data in the receive buffer (the
        broker keeps sending while intake is paused) makes the kernel send RST, and the
        broker then drops what it had not yet read of ours: the last acks."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
            self._sock.settimeout(CLOSE_DRAIN_SECONDS)
            deadline = time.monotonic() + CLOSE_DRAIN_SECONDS
            while time.monotonic() < deadline and self._sock.recv(1 << 16):
                pass  # discard until the broker closes its side
        except OSError:
            pass
        finally:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class NotConnected(Exception):
    """The broker refused or dropped the connection before accepting it."""


def _is_connect_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError | NotConnected)
