"""A small synchronous MQTT 5 client for broker tests, over paho-mqtt 2.x.

No background thread: every wait drives paho's network loop in the calling thread
for a bounded time, so a test reads top to bottom and never outlives its timeouts.
Messages a client receives are collected in ``client.messages`` in arrival order.
"""

from __future__ import annotations

import itertools
import select
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devtools.stack.servers import RunningBroker

HOST = "127.0.0.1"
WAIT = 3.0  # default bound for anything the broker should answer at once

_ids = itertools.count(1)


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTestClient:
    """One MQTT 5 connection (plain, or TLS when ``tls`` is given)."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None, *,
                 tls: ssl.SSLContext | None = None, will: Will | None = None,
                 client_id: str | None = None) -> None:
        self.port = port
        self.username = username
        # The broker binds every account to its username as client id.
        self.client_id = client_id or username or f"t{next(_ids)}-anon"
        self.messages: deque[Received] = deque()
        self.connack: ReasonCode | None = None
        self._pubacks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}

        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    # --- paho callbacks (run inside pump(), i.e. in the test's own thread) ---

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: object) -> None:
        self.connack = rc

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: object) -> None:
        self._pubacks[mid] = rc

    def _on_subscribe(self, _c: paho.Client, _u: object, mid: int, rcs: list[ReasonCode],
                      _p: object) -> None:
        self._subacks[mid] = rcs

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    # --- driving the network loop ---

    @property
    def is_connected(self) -> bool:
        return self._client.is_connected()

    def pump(self, until: Callable[[], bool], timeout: float = WAIT) -> bool:
        """Run the network loop until ``until()`` holds (True) or the time is up or the
        connection is gone (False, unless ``until()`` became true on the way)."""
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._step(min(remaining, 0.05)):
                return until()
        return True

    def _step(self, timeout: float) -> bool:
        """One round of paho's "external event loop" API; False once the socket is gone.

        (Not ``Client.loop()``: that creates a socketpair which nothing public closes.)
        """
        sock = self._client.socket()
        if sock is None:
            return False
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        wlist = [sock] if self._client.want_write() else []
        readable, writable, _ = select.select([sock], wlist, [], 0 if pending else timeout)
        if readable or pending:
            self._client.loop_read()
        if writable and self._client.socket() is not None:
            self._client.loop_write()
        if self._client.socket() is not None:
            self._client.loop_misc()
        return True

    def connect(self, timeout: float = WAIT, *, clean_start: bool = True,
                session_expiry: int | None = None) -> ReasonCode:
        """Connect and return the CONNACK reason code (success or the refusal).

        TCP and TLS errors (e.g. an untrusted server certificate) raise from here;
        a refused CONNECT does not.
        """
        self.connack = None
        properties = None
        if session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry
        self._client.connect(HOST, self.port, keepalive=30, clean_start=clean_start,
                             properties=properties)
        if not self.pump(lambda: self.connack is not None, timeout):
            raise TimeoutError(f"{self.client_id}: no CONNACK within {timeout}s")
        assert self.connack is not None
        return self.connack

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                timeout: float = WAIT) -> ReasonCode | None:
        """Publish; for QoS 1 wait for the PUBACK and return its reason code."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"{self.client_id}: publish failed locally: {info.rc!r}")
        if qos == 0:
            return None
        if not self.pump(lambda: info.mid in self._pubacks, timeout):
            raise TimeoutError(f"{self.client_id}: no PUBACK for {topic} within {timeout}s")
        return self._pubacks.pop(info.mid)

    def subscribe(self, topic_filter: str, *, qos: int = 1,
                  timeout: float = WAIT) -> ReasonCode:
        """Subscribe to one filter and return the SUBACK reason code (granted QoS or refusal)."""
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"{self.client_id}: subscribe failed locally: {result!r}")
        if not self.pump(lambda: mid in self._subacks, timeout):
            raise TimeoutError(f"{self.client_id}: no SUBACK for {topic_filter}")
        (code,) = self._subacks.pop(mid)
        return code

    def wait_for_messages(self, count: int, timeout: float = WAIT) -> list[Received]:
        """Wait until at least ``count`` messages have arrived; return them all (kept)."""
        self.pump(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)

    def take_messages(self) -> list[Received]:
        """Everything received so far, clearing the collection."""
        taken = list(self.messages)
        self.messages.clear()
        return taken

    def kill(self) -> None:
        """Drop the TCP connection without an MQTT DISCONNECT (as a crashed device would)."""
        sock = self._client.socket()
        assert isinstance(sock, socket.socket), "not connected"
        sock.shutdown(socket.SHUT_RDWR)
        self.pump(lambda: self._client.socket() is None, 1.0)  # paho reads EOF and closes

    def close(self) -> None:
        """Clean DISCONNECT when still connected; the socket is closed in any case."""
        if self._client.is_connected():
            self._client.disconnect()
            self.pump(lambda: self._client.socket() is None, 1.0)
        sock = self._client.socket()
        if sock is not None:
            sock.close()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context trusting only ``ca_file`` (or only the system store when None)."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def barrier(sender: MqttTestClient, topic: str, observer: MqttTestClient,
            timeout: float = WAIT) -> list[Received]:
    """Return what ``observer`` received before a marker that ``sender`` publishes now.

    ``observer`` must be subscribed to a filter matching ``topic`` and ``sender`` allowed to
    publish it. The broker forwards one subscriber's messages in the order it accepted them,
    so once the marker arrives, anything the broker let through earlier (e.g. a publish whose
    PUBACK we already have) has arrived too: proof of absence without sleeping.
    Messages before the marker, and every copy of the marker, are removed from ``observer``.
    """
    marker = f"barrier-{uuid.uuid4().hex}".encode()
    code = sender.publish(topic, marker)
    assert code is not None and not code.is_failure, f"barrier publish to {topic}: {code}"

    def marker_seen() -> bool:
        return any(m.payload == marker for m in observer.messages)

    if not observer.pump(marker_seen, timeout):
        raise TimeoutError(f"{observer.client_id}: barrier on {topic} never arrived")
    received = list(observer.messages)
    first = next(i for i, m in enumerate(received) if m.payload == marker)
    observer.messages.clear()
    observer.messages.extend(m for m in received[first:] if m.payload != marker)
    return received[:first]


def pump_all(clients: list[MqttTestClient], until: Callable[[], bool],
             timeout: float = WAIT) -> bool:
    """Like ``MqttTestClient.pump`` for several connections at once."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() >= deadline:
            return until()
        for client in clients:
            client.pump(lambda: False, 0.01)
    return True


def tls_handshake_error(port: int, context: ssl.SSLContext) -> ssl.SSLError | None:
    """Do only a TLS handshake with the broker: the error, or None when it succeeds.

    (A plain socket rather than paho: paho 2.2 leaks its socket when the handshake fails.)
    """
    with socket.create_connection((HOST, port), timeout=WAIT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=HOST):
                return None
        except ssl.SSLError as exc:
            return exc


class Clients:
    """Opens connected clients against one test broker and closes them all at the end."""

    def __init__(self, broker: RunningBroker) -> None:
        self.broker = broker
        self._open: list[MqttTestClient] = []

    def new(self, username: str | None = None, password: str | None = None, *,
            tls: ssl.SSLContext | None = None, will: Will | None = None,
            client_id: str | None = None) -> MqttTestClient:
        """An unconnected client (closed at teardown); plain listener unless ``tls``."""
        port = self.broker.spec.tls_port if tls is not None else self.broker.port
        client = MqttTestClient(port, username, password, tls=tls, will=will,
                                client_id=client_id)
        self._open.append(client)
        return client

    def connect(self, username: str, *, tls: ssl.SSLContext | None = None,
                will: Will | None = None, client_id: str | None = None,
                timeout: float = WAIT) -> MqttTestClient:
        """A connected client for an account known to the broker.

        One connection per account: a second one with the same (bound) client id takes the
        session over and drops the first.
        """
        client = self.new(username, self.broker.credentials[username], tls=tls, will=will,
                          client_id=client_id)
        code = client.connect(timeout=timeout)
        if code.is_failure:
            raise AssertionError(f"{username} refused: {code} ({code.value:#04x})")
        return client

    def device(self, device_id: str, *, tls: ssl.SSLContext | None = None,
               will: Will | None = None) -> MqttTestClient:
        """Provision ``device_id`` on the broker (once) and return it connected."""
        if device_id not in self.broker.credentials:
            self.broker.add_device(device_id)
        return self.connect(device_id, tls=tls, will=will)

    def close_all(self) -> None:
        for client in self._open:
            client.close()
        self._open.clear()
