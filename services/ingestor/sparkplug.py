"""Sparkplug B 3.0 edge-node sessions, as the Primary Host Application keeps them: births,
deaths, `bdSeq`, `seq` order and aliases, turned into the ingestor's parsed items.

No I/O here: `SparkplugSessions.receive` takes one message and gives back the items to
store (readings, statuses, rejects) and the edge nodes to ask for a rebirth;
`expire_gaps` releases messages held for a missing `seq` once the reorder timeout passes.
The host (sparkplug_host.py) owns the connection. Naming (docs/payloads.md, "Sparkplug
B"): an edge node is the gateway `<group>:<edge>`, its own metrics are the device
`<group>:<edge>`, and its device `<d>` is the device `<group>:<edge>:<d>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.ingestor.batch import Parsed, Reject
from shared.mqtt_connection import Message
from shared.schemas import Limits, Reading, StatusChange, Value
from shared.sparkplug import SparkplugError
from shared.sparkplug.payload import DataType, Metric, Payload, decode, resolve
from shared.sparkplug.topics import MessageType, Topic

BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
# Metrics that are controls of the edge node, not measurements: not stored.
CONTROL_PREFIXES = ("Node Control/", "Device Control/")
NUMERIC = frozenset({DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64,
                     DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64,
                     DataType.Float, DataType.Double, DataType.Boolean, DataType.DateTime})
TEXT = frozenset({DataType.String, DataType.Text, DataType.UUID})
UNIT_PROPERTIES = ("engUnit", "engUnits", "unit")
QUALITY_PROPERTIES = ("Quality", "quality")
NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.:-]")

RejectFor = Callable[[Message, str | None, str, str], Reject]


class UnknownMetric(SparkplugError):
    """An alias or a metric no birth declared: the host's state is behind the node's."""


def metric_name(metric: Metric, birth_name: str | None) -> str | None:
    """The platform's metric name: the `insa_metric` property when the edge node gives one
    (e.g. `motor_current`, so diagnosis knows it), else the Sparkplug name with `/` as `.`
    and other characters a name cannot hold as `_`; None when nothing is left."""
    override = metric.properties.get("insa_metric")
    if isinstance(override, str) and override:
        return override
    name = metric.name or birth_name
    if not name:
        return None
    cleaned = NOT_A_NAME.sub("_", name.strip().replace("/", ".")).lstrip("_.:-")[:128]
    return cleaned or None


@dataclass(slots=True)
class Known:
    """A metric as its birth declared it, and its platform name."""

    name: str
    datatype: DataType
    unit: str | None
    platform: str | None


@dataclass(slots=True)
class DeviceSession:
    by_alias: dict[int, Known] = field(default_factory=dict)
    by_name: dict[str, Known] = field(default_factory=dict)
    online: bool = True


@dataclass(slots=True)
class NodeSession:
    bd_seq: int | None
    seq: int  # the last seq taken in order
    node: DeviceSession
    devices: dict[str, DeviceSession] = field(default_factory=dict)
    online: bool = True
    # seq -> (topic, message, payload, received): held until the gap before them closes.
    held: dict[int, tuple[Topic, Message, Payload, datetime]] = field(default_factory=dict)
    gap_since: float | None = None


@dataclass(slots=True)
class Outcome:
    items: list[Parsed] = field(default_factory=list)
    rebirth: list[tuple[str, str]] = field(default_factory=list)  # (group, edge node)
    born: list[str] = field(default_factory=list)  # platform device ids just born


@dataclass(frozen=True, slots=True)
class Triggers:
    """When the host asks an edge node for a rebirth (each can be turned off), and how
    long a gap in `seq` may stay open first; never more often than `min_interval`."""

    on_gap: bool = True
    on_unknown: bool = True  # data before a birth, or an alias no birth declared
    reorder_timeout: float = 2.0
    min_interval: float = 10.0


class SparkplugSessions:
    def __init__(self, reject: RejectFor, triggers: Triggers, limits: Limits) -> None:
        self.reject = reject
        self.triggers = triggers
        self.limits = limits
        self.nodes: dict[tuple[str, str], NodeSession] = {}
        self._asked: dict[tuple[str, str], float] = {}  # last rebirth request (monotonic)
        # platform device id -> (group, edge node) and the Sparkplug device (None: the node)
        self._index: dict[str, tuple[tuple[str, str], str | None]] = {}
        self.counts: dict[str, int] = {}  # what happened, for metrics and tests

    # --- intake -------------------------------------------------------------------------
    def receive(self, topic: Topic, message: Message, received: datetime,
                now: float) -> Outcome:
        out = Outcome()
        if topic.message_type in (MessageType.NCMD, MessageType.DCMD):
            return out  # a host's commands (ours included): nothing to store
        key = (topic.group_id, topic.edge_node_id)
        try:
            payload = decode(message.payload)
        except SparkplugError as exc:
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            str(exc)))
            return out
        kind = topic.message_type
        if kind is MessageType.NBIRTH:
            self._node_birth(topic, message, payload, received, now, out)
        elif kind is MessageType.NDEATH:
            self._node_death(topic, message, payload, received, out)
        else:
            session = self.nodes.get(key)
            if session is None or not session.online:
                self._count("before_birth")
                out.items.append(self._rejected(
                    topic, message, received, "sparkplug_no_birth",
                    f"{kind} from edge node {topic.edge_node_id} before its NBIRTH"))
                self._ask(key, now, out, self.triggers.on_unknown)
                return out
            self._in_order(session, topic, message, payload, received, now, out)
        return out

    def expire_gaps(self, now: float) -> Outcome:
        """Take messages held past the reorder timeout as they are, and ask for a rebirth:
        what was missing is lost (Sparkplug data is QoS 0), the rebirth refreshes state."""
        out = Outcome()
        for key, session in self.nodes.items():
            if session.gap_since is None or now - session.gap_since < \
                    self.triggers.reorder_timeout:
                continue
            self._count("seq_gap")
            for seq in sorted(session.held, key=lambda s: (s - session.seq) % 256):
                topic, message, payload, received = session.held.pop(seq)
                session.seq = seq
                self._apply(session, topic, message, payload, received, now, out)
            session.gap_since = None
            self._ask(key, now, out, self.triggers.on_gap)
        return out

    def edge_node_of(self, device_id: str
                     ) -> tuple[tuple[str, str], str | None, DeviceSession] | None:
        """Where a platform device lives, for a command: its edge node, its Sparkplug
        device id (None for the node's own metrics) and what its last birth declared."""
        found = self._index.get(device_id)
        if found is None:
            return None
        key, device = found
        session = self.nodes.get(key)
        if session is None:
            return None
        state = session.node if device is None else session.devices.get(device)
        return None if state is None else (key, device, state)

    # --- births and deaths --------------------------------------------------------------
    def _node_birth(self, topic: Topic, message: Message, payload: Payload,
                    received: datetime, now: float, out: Outcome) -> None:
        node = DeviceSession()
        bd_seq = _bd_seq(payload)
        self.nodes[(topic.group_id, topic.edge_node_id)] = NodeSession(
            bd_seq=bd_seq, seq=payload.seq if payload.seq is not None else 0, node=node)
        self._count("nbirth")
        device_id, _gateway = _ids(topic, None)
        self._index[device_id] = ((topic.group_id, topic.edge_node_id), None)
        out.born.append(device_id)
        out.items.append(self._status(topic, message, received, None, True, payload))
        self._learn(node, payload.metrics)
        self._readings(topic, message, payload, received, node, None, now, out)

    def _node_death(self, topic: Topic, message: Message, payload: Payload,
                    received: datetime, out: Outcome) -> None:
        session = self.nodes.get((topic.group_id, topic.edge_node_id))
        bd_seq = _bd_seq(payload)
        if session is None or not session.online or (
                bd_seq is not None and session.bd_seq is not None and bd_seq != session.bd_seq):
            self._count("stale_ndeath")  # a late Will of a session a rebirth replaced
            return
        self._count("ndeath")
        session.online = False
        session.held.clear()
        session.gap_since = None
        out.items.append(self._status(topic, message, received, None, False, None))
        for device, state in session.devices.items():
            if state.online:
                state.online = False
                out.items.append(self._status(topic, message, received, device, False, None))

    # --- in order -----------------------------------------------------------------------
    def _in_order(self, session: NodeSession, topic: Topic, message: Message,
                  payload: Payload, received: datetime, now: float, out: Outcome) -> None:
        if payload.seq is None:
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            f"{topic.message_type} without a seq"))
            return
        expected = (session.seq + 1) % 256
        if payload.seq != expected and session.gap_since is None and \
                (payload.seq - expected) % 256 > 128:
            self._count("seq_behind")  # an old one come late: taken, order kept
            self._apply(session, topic, message, payload, received, now, out)
            return
        if payload.seq != expected:
            session.held[payload.seq] = (topic, message, payload, received)
            if session.gap_since is None:
                session.gap_since = now
            return
        session.seq = payload.seq
        self._apply(session, topic, message, payload, received, now, out)
        while (nxt := (session.seq + 1) % 256) in session.held:
            held_topic, held_message, held_payload, held_received = session.held.pop(nxt)
            session.seq = nxt
            self._apply(session, held_topic, held_message, held_payload, held_received, now,
                        out)
        if not session.held:
            session.gap_since = None

    def _apply(self, session: NodeSession, topic: Topic, message: Message, payload: Payload,
               received: datetime, now: float, out: Outcome) -> None:
        kind, device = topic.message_type, topic.device_id
        if kind is MessageType.DBIRTH:
            assert device is not None
            state = session.devices[device] = DeviceSession()
            self._count("dbirth")
            device_id, _gateway = _ids(topic, device)
            self._index[device_id] = ((topic.group_id, topic.edge_node_id), device)
            out.born.append(device_id)
            out.items.append(self._status(topic, message, received, device, True, payload))
            self._learn(state, payload.metrics)
            self._readings(topic, message, payload, received, state, device, now, out)
        elif kind is MessageType.DDEATH:
            assert device is not None
            known = session.devices.get(device)
            if known is not None:
                known.online = False
            self._count("ddeath")
            out.items.append(self._status(topic, message, received, device, False, payload))
        elif kind is MessageType.NDATA:
            self._readings(topic, message, payload, received, session.node, None, now, out)
        elif kind is MessageType.DDATA:
            assert device is not None
            current = session.devices.get(device)
            if current is None or not current.online:
                self._count("before_birth")
                out.items.append(self._rejected(
                    topic, message, received, "sparkplug_no_birth",
                    f"DDATA from device {device} before its DBIRTH"))
                self._ask((topic.group_id, topic.edge_node_id), now, out,
                          self.triggers.on_unknown)
                return
            self._readings(topic, message, payload, received, current, device, now, out)

    # --- metrics to readings ------------------------------------------------------------
    def _learn(self, state: DeviceSession, metrics: Iterable[Metric]) -> None:
        for m in metrics:
            if m.name is None or m.datatype is None:
                continue
            known = Known(m.name, m.datatype, _unit(m), metric_name(m, m.name))
            state.by_name[m.name] = known
            if m.alias is not None:
                state.by_alias[m.alias] = known

    def _readings(self, topic: Topic, message: Message, payload: Payload,
                  received: datetime, state: DeviceSession, device: str | None, now: float,
                  out: Outcome) -> None:
        """One item for the node's or device's metrics in this message: readings grouped
        by timestamp (historical ones apart), or its reject when a metric is unknown (and
        then a rebirth asked for, which declares the aliases again)."""
        device_id, gateway = _ids(topic, device)
        item = Parsed(message, device_id, received, "telemetry", gateway=gateway)
        readings: dict[tuple[datetime, bool], Reading] = {}
        try:
            for metric in payload.metrics:
                value = self._value(metric, state, topic)
                if value is None:
                    continue
                ts = _time(metric.timestamp or payload.timestamp, received, self.limits)
                group = readings.get((ts, metric.is_historical))
                if group is None:
                    group = readings[(ts, metric.is_historical)] = Reading(
                        ts, None, [], historical=metric.is_historical)
                group.values.append(value)
        except UnknownMetric as exc:
            self._count("unknown_alias")
            item.reject = self.reject(message, device_id, "sparkplug_unknown_metric", str(exc))
            out.items.append(item)
            self._ask((topic.group_id, topic.edge_node_id), now, out, self.triggers.on_unknown)
            return
        except SparkplugError as exc:
            item.reject = self.reject(message, device_id, "bad_sparkplug", str(exc))
            out.items.append(item)
            return
        item.readings = list(readings.values())
        if item.readings:
            out.items.append(item)

    def _value(self, metric: Metric, state: DeviceSession, topic: Topic) -> Value | None:
        known = None
        if metric.alias is not None and metric.name is None:
            known = state.by_alias.get(metric.alias)
            if known is None:
                raise UnknownMetric(f"alias {metric.alias}: no birth of "
                                    f"{topic.device_id or topic.edge_node_id} declared it")
        elif metric.name is not None:
            known = state.by_name.get(metric.name)
        if metric.datatype is None:
            if known is None:
                raise UnknownMetric(f"metric {metric.name!r} has no datatype and no birth "
                                    "declared it")
            metric = resolve(metric, known.datatype)
        name = metric.name or (known.name if known else None)
        if metric.is_transient or metric.is_null or name == BD_SEQ or (
                name is not None and name.startswith(CONTROL_PREFIXES)):
            return None
        platform_name = metric_name(metric, name) if known is None or \
            "insa_metric" in metric.properties else known.platform
        if platform_name is None:
            raise SparkplugError(f"metric {name!r} gives no usable platform name")
        unit = _unit(metric) or (known.unit if known else None)
        quality = _quality(metric)
        kind, raw = metric.datatype, metric.value
        if kind in NUMERIC and isinstance(raw, bool | int | float):
            return Value(platform_name, float(raw), None, quality, unit)
        if kind in TEXT and isinstance(raw, str):
            return Value(platform_name, None, raw.replace("\x00", ""), quality, unit)
        self._count("unsupported_datatype")  # arrays, DataSets, Templates, bytes, files
        return None

    # --- helpers ------------------------------------------------------------------------
    def _status(self, topic: Topic, message: Message, received: datetime,
                device: str | None, online: bool, payload: Payload | None) -> Parsed:
        """A birth's status at its timestamp; a death's (`payload` None) when it arrived:
        an NDEATH is the Will, stamped when the node connected."""
        device_id, gateway = _ids(topic, device)
        try:
            ts = _time(payload.timestamp if payload else None, received, self.limits)
        except SparkplugError:  # a birth counts even with a bad clock
            ts = received
        return Parsed(message, device_id, received, "status",
                      status=StatusChange(online, ts), gateway=gateway)

    def _rejected(self, topic: Topic, message: Message, received: datetime, reason: str,
                  detail: str) -> Parsed:
        device_id, gateway = _ids(topic, topic.device_id)
        item = Parsed(message, device_id, received, "telemetry", gateway=gateway)
        item.reject = self.reject(message, device_id, reason, detail)
        return item

    def _ask(self, key: tuple[str, str], now: float, out: Outcome, enabled: bool) -> None:
        """Ask for a rebirth, at most once per `min_interval` per edge node (no storms)."""
        if not enabled:
            return
        last = self._asked.get(key)
        if last is not None and now - last < self.triggers.min_interval:
            self._count("rebirth_suppressed")
            return
        self._asked[key] = now
        self._count("rebirth_requested")
        out.rebirth.append(key)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def _ids(topic: Topic, device: str | None) -> tuple[str, str]:
    gateway = f"{topic.group_id}:{topic.edge_node_id}"
    return (gateway if device is None else f"{gateway}:{device}"), gateway


def _bd_seq(payload: Payload) -> int | None:
    for m in payload.metrics:
        if m.name == BD_SEQ and isinstance(m.value, int) and not isinstance(m.value, bool):
            return m.value
    return None


def _unit(metric: Metric) -> str | None:
    for key in UNIT_PROPERTIES:
        unit = metric.properties.get(key)
        if isinstance(unit, str) and unit:
            return unit[:32]
    return None


def _quality(metric: Metric) -> int | None:
    for key in QUALITY_PROPERTIES:
        quality = metric.properties.get(key)
        if isinstance(quality, int) and not isinstance(quality, bool) and \
                0 <= quality <= 32767:
            return quality
    return None


def _time(ms: int | None, received: datetime, limits: Limits) -> datetime:
    """A Sparkplug timestamp (ms since the epoch) within the ingestor's bounds; the receive
    time when there is none, and a SparkplugError when it is out of them."""
    if ms is None:
        return received
    try:
        ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        raise SparkplugError(f"timestamp {ms} is out of range") from None
    if ts - received > limits.max_future_skew or received - ts > limits.max_past_age:
        raise SparkplugError(f"timestamp {ts.isoformat()} is outside the accepted window")
    return ts
