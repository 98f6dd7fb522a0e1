"""The MQTT 5 test client (paho-mqtt 2.x) for broker tests and for devices feeding the ingestor.

paho's network loop runs in a background thread (``loop_start``), so a device keeps
its connection, PUBACKs and reconnects while a test awaits something else, and a load
generator publishes without driving the loop itself. What the broker answers is kept
under one lock and waited for with a condition: connect results, PUBACK and SUBACK
reason codes, and received messages in arrival order. Never call paho while holding
that lock: paho runs our callbacks under its own mutexes, so the other order deadlocks.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devtools.stack.servers import RunningBroker

HOST = "127.0.0.1"
# Bound for anything the broker should answer at once; generous, because the machine
# may be busy with another suite.
WAIT = 10.0

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


class MqttClient:
    """One MQTT 5 connection (plain, or TLS when ``tls`` is given).

    ``reconnect``: come back after the connection drops (a broker restart), as field
    devices do. Off for broker tests, where a dropped connection is the finding.
    """

    def __init__(self, port: int, username: str | None = None, password: str | None = None, *,
                 tls: ssl.SSLContext | None = None, will: Will | None = None,
                 client_id: str | None = None, reconnect: bool = False) -> None:
        self.port = port
        self.username = username
        # The broker binds every account to its username as client id.
        self.client_id = client_id or username or f"t{next(_ids)}-anon"
        self._changed = threading.Condition()  # guards every field below
        self._messages: list[Received] = []
        self._connack: ReasonCode | None = None
        self._pubacks: dict[int, ReasonCode] = {}
        self._acked: set[int] = set()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._dropped = False  # kill()ed: the socket is gone behind paho's back

        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5, reconnect_on_failure=reconnect)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        # Load tests keep thousands of QoS 1 messages in flight; none is dropped locally.
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        # Back within a second or two after a broker restart, as field devices are.
        # paho annotates whole seconds but sleeps for any float it is given.
        client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    # --- paho callbacks (paho's thread) ---

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: object) -> None:
        with self._changed:
            self._connack = rc
            self._changed.notify_all()

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: object) -> None:
        with self._changed:
            self._pubacks[mid] = rc
            if rc.is_failure:
                self._acked.discard(mid)
            else:
                self._acked.add(mid)
            self._changed.notify_all()

    def _on_subscribe(self, _c: paho.Client, _u: object, mid: int, rcs: list[ReasonCode],
                      _p: object) -> None:
        with self._changed:
            self._subacks[mid] = rcs
            self._changed.notify_all()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._changed:
            self._messages.append(Received(msg.topic, bytes(msg.payload), msg.qos,
                                           bool(msg.retain)))
            self._changed.notify_all()

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(done, timeout)

    # --- connection ---

    @property
    def is_connected(self) -> bool:
        return not self._dropped and self._client.is_connected()

    def connect(self, timeout: float = WAIT, *, clean_start: bool = True,
                session_expiry: int | None = None) -> ReasonCode:
        """Connect and return the CONNACK reason code (success or the refusal).

        TCP and TLS errors (e.g. an untrusted server certificate) raise from here;
        a refused CONNECT does not, and is not retried.
        """
        with self._changed:
            self._connack = None
        properties = None
        if session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry
        self._client.connect(HOST, self.port, keepalive=30, clean_start=clean_start,
                             properties=properties)
        self._client.loop_start()
        if not self._wait(lambda: self._connack is not None, timeout):
            self._client.loop_stop()
            raise TimeoutError(f"{self.client_id}: no CONNACK within {timeout}s")
        assert self._connack is not None
        if self._connack.is_failure:
            self._client.loop_stop()
        return self._connack

    def kill(self) -> None:
        """Drop the TCP connection without an MQTT DISCONNECT (as a crashed device would),
        so the broker sends the Last Will."""
        self._client.loop_stop()  # first, so paho neither reads the EOF nor reconnects
        sock = self._client.socket()
        assert isinstance(sock, socket.socket), "not connected"
        self._dropped = True
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        """Clean DISCONNECT when still connected; the network thread ends in any case."""
        if self._dropped:
            return
        self._client.disconnect()
        self._client.loop_stop()

    # --- publishing ---

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                timeout: float = WAIT) -> ReasonCode | None:
        """Publish; for QoS 1 wait for the PUBACK and return its reason code."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"{self.client_id}: publish failed locally: {info.rc!r}")
        if qos == 0:
            return None
        # paho marks the message published only after our on_publish has recorded the
        # PUBACK, so the code read below is this message's, not an earlier one's.
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"{self.client_id}: no PUBACK for {topic} within {timeout}s")
        with self._changed:
            return self._pubacks[info.mid]

    def publish_nowait(self, topic: str, payload: bytes | str, *, qos: int = 1) -> int:
        """Hand a message to paho and return its packet id, acknowledged or not; paho sends
        it once (re)connected. For load and floods: see ``acked``."""
        return self._client.publish(topic, payload, qos=qos).mid

    def publish_many(self, items: list[tuple[str, bytes]], timeout: float = 30) -> None:
        """Publish QoS 1 as fast as paho sends, then wait for every PUBACK."""
        infos = [self._client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(timeout)  # raises when the client was not connected
            assert info.is_published()

    @property
    def acked(self) -> set[int]:
        """Packet ids the broker acknowledged with success."""
        with self._changed:
            return set(self._acked)

    def wait_acked(self, mids: set[int], timeout: float) -> set[int]:
        """Wait for the broker to acknowledge ``mids``; return those it did not."""
        self._wait(lambda: mids <= self._acked, timeout)
        with self._changed:
            return mids - self._acked

    # --- subscribing and receiving ---

    def subscribe(self, topic_filter: str, *, qos: int = 1,
                  timeout: float = WAIT) -> ReasonCode:
        """Subscribe to one filter and return the SUBACK reason code (granted QoS or refusal)."""
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"{self.client_id}: subscribe failed locally: {result!r}")
        if not self._wait(lambda: mid in self._subacks, timeout):
            raise TimeoutError(f"{self.client_id}: no SUBACK for {topic_filter}")
        with self._changed:
            (code,) = self._subacks.pop(mid)
        return code

    @property
    def messages(self) -> list[Received]:
        """Everything received so far (kept), in arrival order."""
        with self._changed:
            return list(self._messages)

    def wait_for_messages(self, count: int, timeout: float = WAIT) -> list[Received]:
        """Wait until at least ``count`` messages have arrived; return them all (kept)."""
        self._wait(lambda: len(self._messages) >= count, timeout)
        return self.messages

    def take_messages(self) -> list[Received]:
        """Everything received so far, clearing the collection."""
        with self._changed:
            taken, self._messages = self._messages, []
        return taken


def barrier(sender: MqttClient, topic: str, observer: MqttClient,
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
        return any(m.payload == marker for m in observer._messages)

    if not observer._wait(marker_seen, timeout):
        raise TimeoutError(f"{observer.client_id}: barrier on {topic} never arrived")
    with observer._changed:
        received = observer._messages
        first = next(i for i, m in enumerate(received) if m.payload == marker)
        observer._messages = [m for m in received[first:] if m.payload != marker]
    return received[:first]


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context trusting only ``ca_file`` (or only the system store when None)."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


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
    """Opens clients against one test broker and closes them all at the end."""

    def __init__(self, broker: RunningBroker) -> None:
        self.broker = broker
        self._open: list[MqttClient] = []

    def new(self, username: str | None = None, password: str | None = None, *,
            tls: ssl.SSLContext | None = None, will: Will | None = None,
            client_id: str | None = None) -> MqttClient:
        """An unconnected client (closed at teardown); plain listener unless ``tls``."""
        port = self.broker.spec.tls_port if tls is not None else self.broker.port
        client = MqttClient(port, username, password, tls=tls, will=will, client_id=client_id)
        self._open.append(client)
        return client

    def connect(self, username: str, *, tls: ssl.SSLContext | None = None,
                will: Will | None = None, client_id: str | None = None,
                timeout: float = WAIT) -> MqttClient:
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
               will: Will | None = None) -> MqttClient:
        """Provision ``device_id`` on the broker (once) and return it connected."""
        if device_id not in self.broker.credentials:
            self.broker.add_device(device_id)
        return self.connect(device_id, tls=tls, will=will)

    def close_all(self) -> None:
        for client in self._open:
            client.close()
        self._open.clear()

