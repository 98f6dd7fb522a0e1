"""Load generation for `insa bench ingest --via sparkplug`: Sparkplug B 3.0 edge nodes.

Their payloads are binary protobuf, not lines for `mosquitto_pub -l`, so each edge node is
a paho client (username = client id = its gateway id `<group>:<edge>`) driven by a thread
of its own, with no network thread: `publish` writes to the socket at once, and the
thread runs paho's loop itself when the socket is full, to read (NCMD, PUBACK) and for
keepalive. A node connects with its NDEATH as Will (`bdSeq`), optionally waits for the
Primary Host's STATE `online`, sends NBIRTH (`bdSeq`, seq 0) and a DBIRTH per child
device declaring the ten metrics by name, alias and datatype (Double; values null, so
a birth stores nothing and every stored reading is a DDATA's), then DDATA round-robin
over its children: one reading of one child each, its metrics by alias only, one
timestamp (ms, strictly increasing per child so no two readings of a child collapse),
`seq` 0 to 255 per node. A rebirth the host asks for (NCMD `Node Control/Rebirth`) is sent
before the next DDATA and counted.

Flow control: at most `window` messages not yet written (QoS 0) or not yet acknowledged
(QoS 1); beyond that the thread waits, so paho's queue stays small and the broker reads
at its own pace (TCP backpressure).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import paho.mqtt.client as paho

from devtools.bench.publishers import METRICS, TYPICAL
from shared.sparkplug.encoding import OutMetric, encode
from shared.sparkplug.payload import DataType
from shared.sparkplug.topics import NAMESPACE, parse_state, state_topic

GROUP = "bench"
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
ALIASES = {name: n + 1 for n, name in enumerate(METRICS)}
WINDOW = 500
CONNECT_TIMEOUT = 30.0


def gateway_id(edge: str, group: str = GROUP) -> str:
    """The platform's gateway id of an edge node (docs/payloads.md, "Sparkplug B")."""
    return f"{group}:{edge}"


def child_ids(children: int) -> list[str]:
    """The Sparkplug device ids of a node's children (`child-0`, ...)."""
    return [f"child-{k}" for k in range(children)]


def readings_of_child(k: int, children: int, count: int) -> int:
    """How many of a node's `count` DDATA are child `k`'s (round-robin)."""
    return len(range(k, count, children))


class EdgeNodePublisher:
    """Publishes `count` DDATA as one edge node with `children` devices."""

    def __init__(self, port: int, node_gateway_id: str, password: str, children: int,
                 count: int, rate: float | None = None, qos: int = 0,
                 host_id: str | None = None, window: int = WINDOW) -> None:
        self.port = port
        self.gateway_id = node_gateway_id
        self.group, self.edge = node_gateway_id.split(":")
        self.password = password
        self.children = child_ids(children)
        self.count = count
        self.rate = rate  # DDATA per second for this node; None = as fast as flow allows
        self.qos = qos
        self.host_id = host_id  # wait for this Primary Host's STATE online before births
        self.window = window
        self.bd_seq = 0
        self.seq = -1  # the last seq sent
        self.sent = 0  # messages published (births included)
        self.rebirths_asked = 0
        self.error: BaseException | None = None
        self._rebirth = False
        self._host_online = False
        self._connected: bool | None = None  # None: no CONNACK yet
        self._metrics: dict[int, bytes] = {}  # DDATA metrics, by reading index mod 997
        self._pending: deque[paho.MQTTMessageInfo] = deque()
        self._state_topic = state_topic(host_id) if host_id else None
        self._ncmd_topic = f"{NAMESPACE}/{self.group}/NCMD/{self.edge}"
        self.thread = threading.Thread(target=self._run, name=f"node-{node_gateway_id}",
                                       daemon=True)

    def topic(self, kind: str, device: str | None = None) -> str:
        parts = [NAMESPACE, self.group, kind, self.edge]
        return "/".join([*parts, device] if device is not None else parts)

    # --- payloads ---------------------------------------------------------------------
    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _node_birth(self) -> bytes:
        self.seq = -1
        return encode(int(time.time() * 1000), self._next_seq(),
                      [OutMetric(BD_SEQ, DataType.UInt64, self.bd_seq),
                       OutMetric(REBIRTH, DataType.Boolean, False)])

    def _device_birth(self) -> bytes:
        return encode(int(time.time() * 1000), self._next_seq(),
                      [OutMetric(name, DataType.Double, None, alias=alias)
                       for name, alias in ALIASES.items()])

    def _data_metrics(self, index: int) -> bytes:
        """The metrics of a child's `index`th reading, by alias (the values vary as the
        JSON path's do); encoded once and reused: a payload is its header (timestamp,
        seq) and these bytes, two serialized messages concatenated, which protobuf reads
        as one."""
        key = index % 997
        got = self._metrics.get(key)
        if got is None:
            got = self._metrics[key] = encode(None, None, [
                OutMetric(None, DataType.Double, TYPICAL[name] * (1 + key / 10_000),
                          alias=alias) for name, alias in ALIASES.items()])
        return got

    # --- the node's thread ------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"edge node {self.gateway_id} did not finish in {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"edge node {self.gateway_id} failed: {self.error}") \
                from self.error

    def _run(self) -> None:
        try:
            self._publish_all()
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def _publish_all(self) -> None:
        client = self._connect()
        try:
            self._births(client)
            last_ms = [0] * len(self.children)
            started = time.monotonic()
            for i in range(self.count):
                if self.rate:
                    while (delay := started + i / self.rate - time.monotonic()) > 0:
                        client.loop(min(delay, 0.1))
                elif i % 100 == 0:
                    client.loop(0)  # NCMD, keepalive
                if self._rebirth:
                    self._births(client)
                k = i % len(self.children)
                last_ms[k] = max(time.time_ns() // 1_000_000, last_ms[k] + 1)
                payload = encode(last_ms[k], self._next_seq(), []) + \
                    self._data_metrics(i // len(self.children))
                self._publish(client, self.topic("DDATA", self.children[k]), payload)
            while self._pending:
                self._settle(client, self._pending.popleft())
        finally:
            client.disconnect()  # clean: the broker discards the Will
            client.loop(0.1)

    def _connect(self) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.gateway_id,
                             clean_session=True, protocol=paho.MQTTv311)
        client.username_pw_set(self.gateway_id, self.password)
        client.max_inflight_messages_set(self.window)
        client.max_queued_messages_set(0)
        client.will_set(self.topic("NDEATH"), encode(None, None, [
            OutMetric(BD_SEQ, DataType.UInt64, self.bd_seq)]), qos=1)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port, keepalive=60)
        try:
            self._handshake(client)
        except BaseException:
            client.disconnect()
            raise
        return client

    def _handshake(self, client: paho.Client) -> None:
        """Until connected and subscribed, and (`host_id`) the host said it is online."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while self._connected is None and time.monotonic() < deadline:
            client.loop(0.1)
        if not self._connected:
            raise RuntimeError("not connected (refused, or no CONNACK)")
        client.subscribe(self._ncmd_topic, qos=0)
        if self._state_topic is not None:
            client.subscribe(self._state_topic, qos=1)
            while not self._host_online:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no STATE online from host {self.host_id}")
                client.loop(0.1)

    def _births(self, client: paho.Client) -> None:
        self._rebirth = False
        self._publish(client, self.topic("NBIRTH"), self._node_birth())
        for child in self.children:
            self._publish(client, self.topic("DBIRTH", child), self._device_birth())

    def _publish(self, client: paho.Client, topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=self.qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")
        self.sent += 1
        self._pending.append(info)
        while len(self._pending) > self.window:
            self._settle(client, self._pending.popleft())
        while self._pending and self._pending[0].is_published():
            self._pending.popleft()

    def _settle(self, client: paho.Client, info: paho.MQTTMessageInfo) -> None:
        """Until `info` is written (QoS 0) or acknowledged (QoS 1)."""
        deadline = time.monotonic() + 60
        while not info.is_published():
            if time.monotonic() > deadline:
                raise RuntimeError("the broker took no message for 60 s")
            if client.loop(0.05) not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
                raise RuntimeError("connection lost")

    # --- paho callbacks (this thread, from client.loop) --------------------------------
    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: object,
                    _p: object) -> None:
        self._connected = not getattr(reason, "is_failure", False)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self._state_topic:
            try:
                self._host_online = parse_state(bytes(msg.payload))[0]
            except ValueError:
                self._host_online = False
        elif msg.topic == self._ncmd_topic:
            self.rebirths_asked += 1  # the only NCMD a host sends a node unprompted
            self._rebirth = True


def publish_nodes(port: int, credentials: dict[str, str], children: int, per_node: int,
                  rate_per_node: float | None = None, qos: int = 0,
                  host_id: str | None = None, timeout: float = 600
                  ) -> list[EdgeNodePublisher]:
    """Run every edge node (gateway id → password) to completion; returns them (for
    their counts)."""
    nodes = [EdgeNodePublisher(port, g, p, children, per_node, rate_per_node, qos, host_id)
             for g, p in credentials.items()]
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait(timeout)
    return nodes
