"""Every service's one broker connection: paho-mqtt 2.x driven by the service's asyncio
loop (socket readiness callbacks, as in paho's asyncio example), with

- `publish`: awaits the broker's acknowledgement (PUBACK at QoS 1), or raises
  `MqttUnavailable` saying why (not connected, refused, no answer in time);
- subscriptions re-sent on every connect, each message to `on_message`, or to the handler
  of its exact topic (`handle`: the `$CONTROL` answers);
- manual acks (`manual_ack=True`): a QoS 1 message is acked only by `ack` or `ack_all`,
  on the connection it came on (the ingestor acks once its rows are committed);
- inbound PUBLISHes split off the socket's bytes and decoded by shared/mqtt_packets.py,
  the rest of the protocol left to paho;
- `pause`/`resume`: stop reading the socket, so TCP backpressure makes the broker queue;
- `run`: connects, and reconnects on the shared retry policy, until stopped;
- `will`: an optional Last Will, sent with every CONNECT (a gateway's `offline`).

The broker binds each service account to one client id, so a service has one connection
and every part of it (publisher, `$CONTROL` client, subscriber) shares it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from shared.errors import DependencyUnavailable
from shared.health import Health
from shared.lifecycle import wait_any
from shared.mqtt import tls_context
from shared.mqtt_packets import PUBACK, PacketSocket, Publish, pubacks
from shared.retry import Stopped, retry_until_available
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)
PACKETS_PER_WAKEUP = 100
RECONNECT_MIN_SECONDS = 0.5
PUBLISH_TIMEOUT_SECONDS = 10.0
KEEPALIVE_SECONDS = 30


class MqttUnavailable(DependencyUnavailable):
    """The broker could not take a publish now (the caller retries, or answers 503)."""


class Message(msgspec.Struct, gc=False):  # built in C: one per message (shared/readings.py)
    """One inbound message and what is needed to ack it on the connection it came on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    redelivered: bool
    connection: int  # generation: acks for an older connection must not be sent


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for this connection when it ends without a DISCONNECT
    (docs/payloads.md, "Status"): retained, so a later subscriber sees it too."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Session:
    """A persistent session (`clean_start` off): the broker keeps subscriptions and queues
    QoS 1 messages for `expiry_seconds` while the service is away."""

    expiry_seconds: int
    receive_maximum: int


class MqttConnection:
    def __init__(self, common: CommonSettings, username: str, password: str, *,
                 health: Health, subscriptions: Sequence[tuple[str, SubscribeOptions]] = (),
                 on_message: Callable[[Message], None] = lambda _m: None,
                 manual_ack: bool = False, session: Session | None = None,
                 reconnect_max_seconds: float = 5.0,
                 will: Will | Callable[[], Will] | None = None,
                 health_key: str = "mqtt") -> None:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=username,
                             protocol=paho.MQTTv5, manual_ack=True)  # acks are ours
        client.username_pw_set(username, password)
        if isinstance(will, Will):  # paho keeps it for every reconnect
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        # A callable is asked for a new one before each connect (a Sparkplug host's STATE
        # Will carries that connect's timestamp).
        self._will_for_connect = will if callable(will) else None
        self.health_key = health_key  # a service with two connections tells them apart
        context = tls_context(common)
        if context is not None:
            client.tls_set_context(context)
        self.client = client
        self.host, self.port = common.mqtt_host, common.mqtt_port
        self.health = health
        self.subscriptions = dict(subscriptions)  # filter -> options
        self.retired: tuple[str, ...] = ()  # unsubscribed on every connect (see `retire`)
        self.on_message = on_message
        self.manual_ack = manual_ack
        self.session = session
        self.reconnect_max_seconds = reconnect_max_seconds
        self.connection = 0  # counts accepted connections
        self.connected = asyncio.Event()
        self.paused = False
        # Set to end with MQTT 5's "Disconnect with Will Message" (0x04): the broker then
        # publishes the Will, which a plain DISCONNECT discards.
        self.disconnect_with_will = False
        self._handlers: dict[str, Callable[[bytes], None]] = {}
        self._pending: dict[int, asyncio.Future[ReasonCode]] = {}
        self._lost = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._misc: asyncio.Task[None] | None = None
        self._socket: PacketSocket | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def handle(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe to one exact topic and hand its payloads to `handler` (acked at once)."""
        self._handlers[topic] = handler
        self.subscriptions[topic] = SubscribeOptions(qos=1)

    def subscribe(self, filters: Iterable[str], options: SubscribeOptions) -> None:
        """Add subscriptions: sent now if connected, and again on every connect."""
        new = [f for f in filters if f not in self.subscriptions]
        for f in new:
            self.subscriptions[f] = options
        if new and self.connected.is_set():
            self._send_subscribe([(f, options) for f in new])

    def unsubscribe(self, filters: Iterable[str]) -> None:
        gone = [f for f in filters if self.subscriptions.pop(f, None) is not None]
        if gone and self.connected.is_set():
            for chunk in _chunks(gone):
                self.client.unsubscribe(chunk)

    def retire(self, filters: Sequence[str]) -> None:
        """Filters a persistent session may still hold from an earlier layout: unsubscribed
        on every connect (a no-op where the session has none)."""
        self.retired = tuple(filters)

    def _send_subscribe(self, subscriptions: list[tuple[str, SubscribeOptions]]) -> None:
        for chunk in _chunks(subscriptions):
            self.client.subscribe(chunk)

    # --- publishing and acking ----------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      timeout: float = PUBLISH_TIMEOUT_SECONDS) -> None:
        """Return once the broker has the message (PUBACK at QoS 1, PUBCOMP at 2, written
        at 0); raise MqttUnavailable otherwise. A message whose acknowledgement was lost
        with the connection may still reach the broker once: callers that retry publish
        at least once."""
        if not self.connected.is_set():
            raise MqttUnavailable("not connected to the broker")
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttUnavailable(f"publish failed: {paho.error_string(info.rc)}")
        done = self._pending[info.mid] = self._loop.create_future()
        try:
            reason = await asyncio.wait_for(done, timeout)
        except TimeoutError:
            raise MqttUnavailable("the broker did not acknowledge in time") from None
        finally:
            self._pending.pop(info.mid, None)
        if reason.is_failure:  # the platform's ACL, not the caller's fault
            raise MqttUnavailable(f"the broker refused the publish on {topic}: {reason}")

    def ack(self, message: Message) -> bool:
        """Ack, or False when the connection it came on is gone (the broker redelivers)."""
        if message.qos == 0:
            return True
        if message.connection != self.connection or not self.connected.is_set():
            return False
        self.client.ack(message.mid, message.qos)
        return True

    def ack_all(self, messages: Iterable[Message]) -> int:
        """Ack QoS 1 messages in one write (a batch's: one packet of PUBACKs, not one per
        message); returns how many could not be, their connection being gone."""
        live = self.connection if self.connected.is_set() else None
        mids: list[int] = []
        gone = 0
        for message in messages:
            if message.qos == 0:
                continue
            if message.connection != live:
                gone += 1
            elif message.qos == 1:
                mids.append(message.mid)
            else:
                self.client.ack(message.mid, message.qos)
        if mids:  # paho's own queue, so the bytes go out in order with its other packets
            self.client._packet_queue(PUBACK, pubacks(mids), 0, 0)
        return gone

    # --- connection management ----------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, and reconnect (backing off while refused or unreachable, at once after
        a drop) until `stop` is set; then send what is queued (acks) and disconnect."""
        while not stop.is_set():
            try:
                await retry_until_available(
                    lambda: self._connect(stop), transient=_is_connect_failure, what="mqtt",
                    initial=RECONNECT_MIN_SECONDS, max_delay=self.reconnect_max_seconds,
                    stop=stop,
                    on_failure=lambda exc: self.health.failing(self.health_key,
                                                               f"connect failed: {exc}"))
            except Stopped:
                break
            await wait_any(stop, self._lost)
        await self.disconnect()

    async def disconnect(self, timeout: float = 5.0) -> None:
        """Send the queued packets, then DISCONNECT; paho closes the socket once it is out."""
        if self.client.socket() is None:
            return
        deadline = self._loop.time() + timeout
        self.client.disconnect(reasoncode=ReasonCode(
            PacketTypes.DISCONNECT, "Disconnect with will message")
            if self.disconnect_with_will else None)
        while self.client.socket() is not None and self.client.want_write() \
                and self._loop.time() < deadline:
            self.client.loop_write()
            await asyncio.sleep(0.01)  # the socket buffer may be full: let it drain

    async def _connect(self, stop: asyncio.Event) -> None:
        """Connect and wait for the broker's answer; a refusal raises, to be retried."""
        self._lost.clear()
        props = Properties(PacketTypes.CONNECT)
        if self.session is not None:
            props.SessionExpiryInterval = self.session.expiry_seconds
            props.ReceiveMaximum = self.session.receive_maximum
        if self._will_for_connect is not None:
            will = self._will_for_connect()
            self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self.client.connect(self.host, self.port, keepalive=KEEPALIVE_SECONDS,
                            clean_start=self.session is None, properties=props)
        await wait_any(self.connected, self._lost, stop)
        if self._lost.is_set():
            raise NotConnected("connection closed before the broker accepted it")

    # --- paho callbacks (on the event loop) ---------------------------------------------
    def _on_connect(self, client: paho.Client, _u: object, flags: paho.ConnectFlags,
                    reason: ReasonCode, _p: Properties | None) -> None:
        if reason.is_failure:
            self.health.failing(self.health_key, f"broker refused connection: {reason}")
            log.error("mqtt connection refused", reason=str(reason))
            return
        self.connection += 1
        self.connected.set()
        self.health.ok(self.health_key)
        log.info("mqtt connected", session_present=flags.session_present,
                 connection=self.connection)
        # Re-sent on every connect: a clean session has none, a persistent one may have
        # expired.
        if self.retired:
            for chunk in _chunks(list(self.retired)):
                client.unsubscribe(chunk)
        if self.subscriptions:
            self._send_subscribe(list(self.subscriptions.items()))

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: paho.DisconnectFlags,
                       reason: ReasonCode, _p: Properties | None) -> None:
        self.connected.clear()
        self.health.failing(self.health_key, f"disconnected: {reason}")
        log.warning("mqtt disconnected", reason=str(reason))
        for done in self._pending.values():
            if not done.done():
                done.set_exception(MqttUnavailable(
                    "the connection was lost before the broker acknowledged"))
        self._lost.set()

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode,
                    _p: Properties | None) -> None:
        done = self._pending.get(mid)
        if done is not None and not done.done():
            done.set_result(reason)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        """A QoS 2 PUBLISH (the only kind paho still decodes; none is subscribed to)."""
        self._on_publish_packet(Publish(msg.topic, cast(bytes, msg.payload), msg.mid, msg.qos,
                                        bool(msg.dup)))

    def _on_publish_packet(self, publish: Publish) -> None:
        handler = self._handlers.get(publish.topic)
        if handler is not None:
            handler(publish.payload)
        else:
            self.on_message(Message(publish.topic, publish.payload, publish.mid, publish.qos,
                                    publish.dup, self.connection))
            if self.manual_ack:
                return
        if publish.qos:  # after handling it, as paho's automatic acks are
            self.client.ack(publish.mid, publish.qos)

    # --- socket plumbing (paho's asyncio integration; paho types sockets as a private
    # protocol, hence Any) ----------------------------------------------------------------
    def _on_socket_open(self, client: paho.Client, _u: object, sock: Any) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        packets = PacketSocket(sock)
        # paho reads each packet with three or more recv() calls and decodes a PUBLISH into
        # objects the services do not use: the PUBLISHes are split off here (one large read
        # serves hundreds), the rest is served to paho (shared/mqtt_packets.py).
        client._sock = packets  # paho 2.x has no public hook for this
        self._socket = packets
        # A new connection must read its CONNACK even while intake is paused; the first
        # delivery past the window pauses it again.
        self.paused = False
        self._loop.add_reader(sock, self._on_readable, packets)
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

    def _on_readable(self, packets: PacketSocket) -> None:
        # Packet by packet, so a pause takes effect at once; bounded, so a broker that
        # never stops sending cannot starve other tasks (what is left gets another turn:
        # the socket may not become readable again).
        for _ in range(PACKETS_PER_WAKEUP):
            if self.paused or self.client.socket() is not packets:
                return
            packet = packets.next()
            if packet is None:  # no whole packet buffered
                if not packets.fill():
                    return  # wait until the socket is readable
            elif packet is True:
                self.client.loop_read()
            else:
                self._on_publish_packet(packet)
        self._loop.call_soon(self._on_readable, packets)

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


T = TypeVar("T")
SUBSCRIPTIONS_PER_PACKET = 1000  # a partitioned ingestor's thousands, in several packets


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), SUBSCRIPTIONS_PER_PACKET):
        yield items[i:i + SUBSCRIPTIONS_PER_PACKET]


class NotConnected(Exception):
    """The broker refused or dropped the connection before accepting it."""


def _is_connect_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError | NotConnected)
