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

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from services.ingestor.batch import Parsed, Reject
from services.ingestor.sparkplug_values import (
    NUMERIC,
    TEXT,
    Known,
    metric_name,
    quality_of,
    timestamp,
    unit_of,
)
from shared.errors import ValidationFailed
from shared.mqtt_connection import Message
from shared.readings import Limits, StatusChange, Value, check_units, reading_of
from shared.schemas import check_device_id
from shared.sparkplug import SparkplugError
from shared.sparkplug.payload import Metric, Payload, decode, resolve
from shared.sparkplug.topics import MessageType, Topic

BD_SEQ = "bdSeq"
MAX_SEQ = 255
RECENT_SEQS = 32  # seqs taken lately: one seen again is a repeat, not a new gap
# What the host keeps per node is bounded: a node (one account, its own topics only) that
# invents device ids cannot grow it without end.
MAX_DEVICES_PER_NODE = 10_000
REBIRTH = "Node Control/Rebirth"
# Metrics that are controls of the edge node, not measurements: not stored.
CONTROL_PREFIXES = ("Node Control/", "Device Control/")
RejectFor = Callable[[Message, str | None, str, str], Reject]
_LOST = Message("", b"", 0, 0, False, 0)  # what stands for a delivery when none came


class UnknownMetric(SparkplugError):
    """An alias or a metric no birth declared: the host's state is behind the node's."""


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
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_SEQS))


@dataclass(slots=True)
class Outcome:
    items: list[Parsed] = field(default_factory=list)
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
    def __init__(self, reject: RejectFor, triggers: Triggers, limits: Limits,
                 on_event: Callable[[str], None] = lambda _event: None) -> None:
        self.reject = reject
        self.on_event = on_event  # each count, as it happens (the ingestor's metric)
        self.triggers = triggers
        self.limits = limits
        self.nodes: dict[tuple[str, str], NodeSession] = {}
        self._asked: dict[tuple[str, str], float] = {}  # last rebirth request (monotonic)
        self._wanted: set[tuple[str, str]] = set()  # rebirths to ask for when allowed
        # platform device id -> (group, edge node) and the Sparkplug device (None: the node)
        self._index: dict[str, tuple[tuple[str, str], str | None]] = {}
        self.counts: dict[str, int] = {}  # what happened, for metrics and tests

    # --- intake -------------------------------------------------------------------------
    def receive(self, topic: Topic, message: Message, received: datetime,
                now: float) -> Outcome:
        out = Outcome()
        if topic.message_type in (MessageType.NCMD, MessageType.DCMD):
            return out  # a host's commands: nothing to store
        key = (topic.group_id, topic.edge_node_id)
        try:
            for part in _ids(topic, topic.device_id):
                check_device_id(part)
        except ValidationFailed as exc:
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            f"{exc.message} (Sparkplug ids become the "
                                            "platform's device ids)"))
            return out
        try:
            payload = decode(message.payload)
            if payload.seq is not None and not 0 <= payload.seq <= MAX_SEQ:
                raise SparkplugError(f"seq {payload.seq} is outside 0-{MAX_SEQ}")
        except SparkplugError as exc:
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            str(exc)))
            return out
        kind = topic.message_type
        if kind is MessageType.NBIRTH:
            self._node_birth(topic, message, payload, received, out)
        elif kind is MessageType.NDEATH:
            self._node_death(topic, message, payload, received, out)
        else:
            session = self.nodes.get(key)
            if session is None or not session.online:
                self._count("before_birth")
                out.items.append(self._rejected(
                    topic, message, received, "sparkplug_no_birth",
                    f"{kind} from edge node {topic.edge_node_id} before its NBIRTH"))
                self._want(key, self.triggers.on_unknown)
                return out
            self._in_order(session, topic, message, payload, received, now, out)
        return out

    def expire_gaps(self, now: float) -> Outcome:
        """Take messages held past the reorder timeout, in seq order, and ask for a
        rebirth: what was missing is lost (Sparkplug data is QoS 0), the rebirth refreshes
        the values and aliases."""
        out = Outcome()
        for key, session in self.nodes.items():
            if session.gap_since is None or now - session.gap_since < \
                    self.triggers.reorder_timeout:
                continue
            self._count("seq_gap")
            for seq in sorted(session.held, key=lambda s: (s - session.seq) % 256):
                topic, message, payload, received = session.held.pop(seq)
                self._take(session, seq, topic, message, payload, received, out)
            session.gap_since = None
            self._want(key, self.triggers.on_gap)
        return out

    def rebirths_due(self, now: float) -> list[tuple[str, str]]:
        """The edge nodes to ask for a rebirth now: wanted, and not asked within
        `min_interval` (a request held back is sent once the interval has passed, not
        dropped). Call only when the request can be sent."""
        due = [key for key in self._wanted if now - self._asked.get(key, -1e18) >=
               self.triggers.min_interval]
        for key in due:
            self._wanted.discard(key)
            self._asked[key] = now
            self._count("rebirth_requested")
        return due

    def lost(self, received: datetime) -> Outcome:
        """The host's connection ended: every node it knew is offline to it (what they
        send meanwhile is lost to a clean session), and each must be born again."""
        out = Outcome()
        for (group, edge), session in self.nodes.items():
            if session.online:
                out.items.append(self._offline(Topic(group, MessageType.NDEATH, edge),
                                               _LOST, received))
        self.nodes.clear()
        return out

    def edge_node_of(self, device_id: str
                     ) -> tuple[tuple[str, str], str | None, DeviceSession] | None:
        """Where a platform device lives, for a command: its edge node, its Sparkplug
        device id (None for the node's own metrics) and what its last birth declared;
        None unless it is born and online."""
        found = self._index.get(device_id)
        if found is None:
            return None
        key, device = found
        session = self.nodes.get(key)
        if session is None or not session.online:
            return None
        state = session.node if device is None else session.devices.get(device)
        return None if state is None or not state.online else (key, device, state)

    def knows_node(self, gateway_id: str) -> bool:
        return any(f"{g}:{e}" == gateway_id for g, e in self.nodes)

    # --- births and deaths --------------------------------------------------------------
    def _node_birth(self, topic: Topic, message: Message, payload: Payload,
                    received: datetime, out: Outcome) -> None:
        key = (topic.group_id, topic.edge_node_id)
        previous = self.nodes.get(key)
        if previous is not None:  # a rebirth: devices not born again are gone
            for device, state in previous.devices.items():
                if state.online:
                    out.items.append(self._status(topic, message, received, device, False,
                                                  None))
        node = DeviceSession()
        session = self.nodes[key] = NodeSession(bd_seq=_bd_seq(payload), seq=payload.seq or 0,
                                                node=node)
        session.recent.append(session.seq)
        self._count("nbirth")
        device_id, gateway = _ids(topic, None)
        self._index[device_id] = (key, None)
        out.born.append(device_id)
        # The gateway (its status in the catalog) and the node's own device.
        out.items.append(Parsed(message, gateway, received, "gateway_status",
                                status=StatusChange(True, received), gateway=gateway))
        out.items.append(self._status(topic, message, received, None, True, payload))
        self._learn(topic, message, received, node, payload.metrics, out)
        self._readings(topic, message, payload, received, node, None, out)

    def _node_death(self, topic: Topic, message: Message, payload: Payload,
                    received: datetime, out: Outcome) -> None:
        session = self.nodes.get((topic.group_id, topic.edge_node_id))
        bd_seq = _bd_seq(payload)
        if session is not None and (not session.online or (
                bd_seq is not None and session.bd_seq is not None and bd_seq != session.bd_seq)):
            self._count("stale_ndeath")  # a late Will of a session a rebirth replaced
            return
        self._count("ndeath")
        if session is not None:
            session.online = False
            session.held.clear()
            session.gap_since = None
        # Unknown to this host (it started after the birth): the catalog knows its devices.
        out.items.append(self._offline(topic, message, received))

    def _offline(self, topic: Topic, message: Message, received: datetime) -> Parsed:
        """The node's gateway offline: the ingestor marks each of its devices offline, at
        the time the death arrived (an NDEATH is a Will, stamped when the node connected)."""
        _device, gateway = _ids(topic, None)
        return Parsed(message, gateway, received, "gateway_status",
                      status=StatusChange(False, received), gateway=gateway)

    # --- in order -----------------------------------------------------------------------
    def _in_order(self, session: NodeSession, topic: Topic, message: Message,
                  payload: Payload, received: datetime, now: float, out: Outcome) -> None:
        seq = payload.seq
        if seq is None:
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            f"{topic.message_type} without a seq"))
            return
        if seq == (session.seq + 1) % 256:
            self._take(session, seq, topic, message, payload, received, out)
            while (nxt := (session.seq + 1) % 256) in session.held:
                self._take(session, nxt, *session.held.pop(nxt), out)
            if not session.held:
                session.gap_since = None
        elif seq in session.recent:
            self._count("seq_repeated")  # taken already: never twice, never backwards
        else:  # ahead of a gap (or after a lost reconnect): wait for what is missing
            session.held[seq] = (topic, message, payload, received)
            if session.gap_since is None:
                session.gap_since = now

    def _take(self, session: NodeSession, seq: int, topic: Topic, message: Message,
              payload: Payload, received: datetime, out: Outcome) -> None:
        session.seq = seq
        session.recent.append(seq)
        kind, device = topic.message_type, topic.device_id
        if kind is MessageType.DBIRTH:
            assert device is not None
            if device not in session.devices and len(session.devices) >= MAX_DEVICES_PER_NODE:
                out.items.append(self._rejected(
                    topic, message, received, "bad_sparkplug", f"edge node "
                    f"{topic.edge_node_id} has {MAX_DEVICES_PER_NODE} devices, the most one "
                    "node may have"))
                return
            state = session.devices[device] = DeviceSession()
            self._count("dbirth")
            device_id, _gateway = _ids(topic, device)
            self._index[device_id] = ((topic.group_id, topic.edge_node_id), device)
            out.born.append(device_id)
            out.items.append(self._status(topic, message, received, device, True, payload))
            self._learn(topic, message, received, state, payload.metrics, out)
            self._readings(topic, message, payload, received, state, device, out)
        elif kind is MessageType.DDEATH:
            assert device is not None
            known = session.devices.get(device)
            if known is not None:
                known.online = False
            self._count("ddeath")
            out.items.append(self._status(topic, message, received, device, False, payload))
        elif kind is MessageType.NDATA:
            self._readings(topic, message, payload, received, session.node, None, out)
        elif kind is MessageType.DDATA:
            assert device is not None
            current = session.devices.get(device)
            if current is None or not current.online:
                self._count("before_birth")
                out.items.append(self._rejected(
                    topic, message, received, "sparkplug_no_birth",
                    f"DDATA from device {device} before its DBIRTH"))
                self._want((topic.group_id, topic.edge_node_id), self.triggers.on_unknown)
                return
            self._readings(topic, message, payload, received, current, device, out)

    # --- metrics to readings ------------------------------------------------------------
    def _learn(self, topic: Topic, message: Message, received: datetime,
               state: DeviceSession, metrics: Iterable[Metric], out: Outcome) -> None:
        """What a birth declares; a metric it cannot declare (no name, no datatype, or a
        value that does not decode) is a reject, not a reason to ask for a rebirth again."""
        problems = []
        for m in metrics:
            if m.name is None or m.datatype is None:
                problems.append(f"birth metric {m.name or m.alias!r} has no "
                                f"{'name' if m.name is None else 'datatype'}")
                continue
            known = Known(m.name, m.datatype, unit_of(m), metric_name(m, m.name))
            state.by_name[m.name] = known
            if m.alias is not None:
                state.by_alias[m.alias] = known
        if problems:
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            "; ".join(problems)[:900]))

    def _readings(self, topic: Topic, message: Message, payload: Payload,
                  received: datetime, state: DeviceSession, device: str | None,
                  out: Outcome) -> None:
        """One item for the node's or device's metrics in this message: readings grouped
        by timestamp (historical ones apart). A metric the birth did not declare rejects
        the message and asks for a rebirth; a metric that does not decode, is not finite
        or gives no name is left out, recorded as a reject beside the rest."""
        device_id, gateway = _ids(topic, device)
        item = Parsed(message, device_id, received, "telemetry", gateway=gateway)
        groups: dict[tuple[datetime, bool], list[Value]] = {}  # by time and is_historical
        times: dict[int | None, datetime] = {}
        problems: list[str] = []
        try:
            for metric in payload.metrics:
                try:
                    value = self._value(metric, state, topic)
                    if value is None:
                        continue
                    ms = metric.timestamp or payload.timestamp
                    ts = times.get(ms)  # metrics mostly share the payload's time
                    if ts is None:
                        ts = times[ms] = timestamp(ms, received, self.limits)
                except UnknownMetric:
                    raise
                except SparkplugError as exc:
                    problems.append(str(exc))
                    continue
                group = groups.get((ts, metric.is_historical))
                if group is None:
                    group = groups[(ts, metric.is_historical)] = []
                group.append(value)
            if sum(map(len, groups.values())) > self.limits.max_values_per_reading:
                raise ValidationFailed("too_many_values", f"more than "
                                       f"{self.limits.max_values_per_reading} values")
            item.readings = check_units([reading_of(at, None, values, historical) for
                                         (at, historical), values in groups.items()])
        except UnknownMetric as exc:
            self._count("unknown_alias")
            item.reject = self.reject(message, device_id, "sparkplug_unknown_metric", str(exc))
            out.items.append(item)
            self._want((topic.group_id, topic.edge_node_id), self.triggers.on_unknown)
            return
        except ValidationFailed as exc:
            item.readings = []
            item.reject = self.reject(message, device_id, exc.reason, exc.message)
        if item.readings or item.reject is not None:
            out.items.append(item)
        if problems:
            self._count("bad_metric")
            out.items.append(self._rejected(topic, message, received, "bad_sparkplug",
                                            "; ".join(problems)[:900], device))

    def _value(self, metric: Metric, state: DeviceSession, topic: Topic) -> Value | None:
        if metric.error is not None:
            raise SparkplugError(metric.error)
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
        unit = unit_of(metric) or (known.unit if known else None)
        quality = quality_of(metric)
        kind, raw = metric.datatype, metric.value
        if kind in NUMERIC and isinstance(raw, bool | int | float):
            number = float(raw)
            if not math.isfinite(number):
                raise SparkplugError(f"metric {name!r}: {number} is not a finite value")
            return Value(platform_name, number, None, quality, unit)
        if kind in TEXT and isinstance(raw, str):
            return Value(platform_name, None, raw.replace("\x00", ""), quality, unit)
        self._count("unsupported_datatype")  # arrays, DataSets, Templates, bytes, files
        return None

    # --- helpers ------------------------------------------------------------------------
    def _status(self, topic: Topic, message: Message, received: datetime,
                device: str | None, online: bool, _payload: Payload | None) -> Parsed:
        """A birth's or death's status at the time it arrived: one clock for both (an
        NDEATH is a Will stamped when the node connected, and an edge's clock ahead of ours
        would otherwise make its death look older than its birth)."""
        device_id, gateway = _ids(topic, device)
        return Parsed(message, device_id, received, "status",
                      status=StatusChange(online, received), gateway=gateway)

    def _rejected(self, topic: Topic, message: Message, received: datetime, reason: str,
                  detail: str, device: str | None = None) -> Parsed:
        device_id, gateway = _ids(topic, device or topic.device_id)
        item = Parsed(message, device_id, received, "telemetry", gateway=gateway)
        item.reject = self.reject(message, device_id, reason, detail)
        return item

    def _want(self, key: tuple[str, str], enabled: bool) -> None:
        """A rebirth for this node, sent by the host when `rebirths_due` allows it."""
        if enabled:
            self._wanted.add(key)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.on_event(what)


def _ids(topic: Topic, device: str | None) -> tuple[str, str]:
    gateway = f"{topic.group_id}:{topic.edge_node_id}"
    return (gateway if device is None else f"{gateway}:{device}"), gateway


def _bd_seq(payload: Payload) -> int | None:
    for m in payload.metrics:
        if m.name == BD_SEQ and isinstance(m.value, int) and not isinstance(m.value, bool):
            return m.value
    return None
