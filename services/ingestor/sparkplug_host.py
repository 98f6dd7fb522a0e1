"""The Sparkplug B 3.0 Primary Host Application, in the ingestor (docs/architecture.md,
"Sparkplug B host").

Its own connection (account `insa-sparkplug`): a clean session, as the specification
requires, with a Will `{"online": false, "timestamp": T}` retained on
`spBv1.0/STATE/<host_id>`; it subscribes to `spBv1.0/#` and to its own STATE, then
publishes `online: true` with the same T before anything else, again whenever it sees
itself declared offline, and `online: false` before an intentional disconnect. What the
edge nodes send goes through sparkplug.py into the ingestor's pipeline, like any reading.
Commands and desired config the API publishes for a Sparkplug device (on its gateway's
tree, as for any gateway's child) go out as DCMD, or NCMD for the node's own metrics; a
rebirth request is an NCMD `Node Control/Rebirth`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.ingestor.batch import Parsed
from services.ingestor.pipeline import Pipeline
from services.ingestor.settings import IngestorSettings
from services.ingestor.sparkplug import REBIRTH, Outcome, SparkplugSessions, Triggers
from shared.errors import InsaError
from shared.health import Health
from shared.mqtt import ANY, child_topic
from shared.mqtt_connection import Message, MqttConnection, Will
from shared.settings import CommonSettings
from shared.sparkplug import SparkplugError
from shared.sparkplug.encoding import OutMetric, encode
from shared.sparkplug.payload import DataType
from shared.sparkplug.topics import (
    NAMESPACE,
    MessageType,
    dcmd_topic,
    ncmd_topic,
    parse_state,
    parse_topic,
    state_payload,
    state_topic,
)

log = structlog.get_logger(__name__)
TICK_SECONDS = 0.25
OFFLINE_TIMEOUT_SECONDS = 2.0
COMMANDS = child_topic(ANY, ANY, "command")
CONFIGS = child_topic(ANY, ANY, "config")


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    then: Outgoing | None = None  # published once this one is (a command's `accepted`)
    otherwise: Outgoing | None = None  # published if this one is not (its `failed`)


def now_ms() -> int:
    return int(time.time() * 1000)


class SparkplugHost:
    def __init__(self, common: CommonSettings, settings: IngestorSettings, health: Health,
                 pipeline: Pipeline) -> None:
        self.host_id = settings.sparkplug_host_id
        self.state_topic = state_topic(self.host_id)
        self.pipeline = pipeline
        self.sessions = SparkplugSessions(
            lambda message, device, reason, detail: pipeline.parser.reject(
                message, device, reason, detail),
            Triggers(on_gap=settings.sparkplug_rebirth_on_gap,
                     on_unknown=settings.sparkplug_rebirth_on_unknown,
                     reorder_timeout=settings.sparkplug_reorder_timeout_seconds,
                     min_interval=settings.sparkplug_rebirth_min_interval_seconds),
            pipeline.parser.limits,
            on_event=lambda event: pipeline.metrics.sparkplug_events.labels(event).inc())
        self.timestamp = 0  # T of the current connection's Will and online STATE
        self.desired: dict[str, dict[str, Any]] = {}  # device -> its desired config
        self.announced = 0  # the connection whose online STATE is out
        self.stopping = False
        # noLocal: the host never hears its own STATE, NCMD or DCMD back.
        own = SubscribeOptions(qos=1, noLocal=True)
        self.connection = MqttConnection(
            common, settings.sparkplug_username,
            settings.sparkplug_password.get_secret_value(), health=health,
            subscriptions=[(self.state_topic, own), (f"{NAMESPACE}/#", own),
                           (COMMANDS, SubscribeOptions(qos=1)),
                           (CONFIGS, SubscribeOptions(qos=1))],
            on_message=self.on_message, will=self._will, health_key="sparkplug")
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue()

    # The pipeline's flow control: reading waits while its window is full (QoS 0 has no
    # ack to hold back); no longer once stopping, when the offline STATE's PUBACK must come.
    def pause(self) -> None:
        if not self.stopping:
            self.connection.pause()

    def resume(self) -> None:
        self.connection.resume()

    def _will(self) -> Will:
        self.timestamp = now_ms()
        return Will(self.state_topic, state_payload(False, self.timestamp), qos=1, retain=True)

    async def run(self, stop: asyncio.Event) -> None:
        disconnect = asyncio.Event()  # after the offline STATE, when stopping
        async with asyncio.TaskGroup() as group:
            group.create_task(self.connection.run(disconnect), name="sparkplug-mqtt")
            parts = [group.create_task(self._announce(), name="sparkplug-state"),
                     group.create_task(self._send(), name="sparkplug-send"),
                     group.create_task(self._tick(), name="sparkplug-tick")]
            await stop.wait()
            self.stopping = True
            self.connection.resume()
            for part in parts:  # nothing may follow the offline STATE
                part.cancel()
            await self._offline()
            disconnect.set()

    # --- STATE --------------------------------------------------------------------------
    async def _announce(self) -> None:
        """`online: true` after each connect (its subscriptions already sent), with that
        connect's T, before anything else is published on it; tried until it is out."""
        while True:
            await self.connection.connected.wait()
            connection = self.connection.connection
            if connection != self.announced and await self._publish_state(True):
                self.announced = connection
                log.info("sparkplug host online", host_id=self.host_id,
                         timestamp=self.timestamp)
            await asyncio.sleep(TICK_SECONDS)

    async def _publish_state(self, online: bool, timestamp: int | None = None) -> bool:
        try:
            await self.connection.publish(
                self.state_topic, state_payload(online, timestamp or self.timestamp),
                retain=True, timeout=OFFLINE_TIMEOUT_SECONDS if not online else 10.0)
            return True
        except InsaError as exc:
            log.warning("sparkplug STATE not published", online=online, error=str(exc))
            return False

    async def _offline(self) -> None:
        """An intentional disconnect says so first, at the time it happens; when it cannot,
        the connection ends asking the broker for the Will (MQTT 5 reason 0x04) instead
        of a clean DISCONNECT, which would discard it."""
        if not self.connection.connected.is_set():
            return
        if not await self._publish_state(False, max(now_ms(), self.timestamp)):
            self.connection.disconnect_with_will = True

    def _own_state(self, payload: bytes) -> None:
        try:
            online, timestamp = parse_state(payload)
        except SparkplugError:
            online, timestamp = False, self.timestamp
        if not online and timestamp >= self.timestamp and not self.stopping \
                and self.connection.connected.is_set():
            log.warning("sparkplug host declared offline while connected; online again")
            asyncio.get_running_loop().create_task(self._publish_state(True))

    # --- intake -------------------------------------------------------------------------
    def on_message(self, message: Message) -> None:
        received = datetime.now(UTC)
        delivery = msgspec.structs.replace(message, qos=0)  # acked here, never by the ingestor
        try:
            if message.topic == self.state_topic:
                self._own_state(message.payload)
            elif message.topic.startswith(NAMESPACE + "/"):
                topic = parse_topic(message.topic)
                if topic is None:
                    return  # another host's STATE
                if self._refused(delivery, topic.message_type, f"{topic.group_id}:"
                                 f"{topic.edge_node_id}", received):
                    return
                self._take(self.sessions.receive(topic, delivery, received,
                                                 time.monotonic()))
            else:
                self._downlink(message)
        except SparkplugError as exc:  # a malformed topic: recorded like any reject
            self.pipeline.submit(Parsed(delivery, None, received, "unknown", reject=(
                self.pipeline.parser.reject(delivery, None, "bad_sparkplug", str(exc)))))

    def _refused(self, delivery: Message, kind: MessageType, gateway: str,
                 received: datetime) -> bool:
        """Refused before decoding, as the ingestor refuses any message: over the size
        limit or the gateway's rate (the flood guard)."""
        parser = self.pipeline.parser
        reason = detail = ""
        if len(delivery.payload) > parser.max_payload:
            reason, detail = "payload_too_large", f"{len(delivery.payload)} bytes > " \
                                                  f"{parser.max_payload}"
        elif kind is not MessageType.NDEATH and not parser.admit(gateway, True):
            reason, detail = "rate_limited", parser.over_limit
        if not reason:
            return False
        self.pipeline.submit(Parsed(delivery, gateway, received, "unknown", gateway=gateway,
                                    reject=parser.reject(delivery, gateway, reason, detail)))
        return True

    def _take(self, outcome: Outcome) -> None:
        for item in outcome.items:
            self.pipeline.submit(item)
        for device in outcome.born:
            if device in self.desired:
                self._write(device, self.desired[device], None)

    async def _tick(self) -> None:
        """Gaps past their timeout; rebirths when allowed; a lost connection."""
        was_connected = False
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            self._take(self.sessions.expire_gaps(now))
            connected = self.connection.connected.is_set()
            if was_connected and not connected:
                log.warning("sparkplug host disconnected: its edge nodes are offline to it")
                self._take(self.sessions.lost(datetime.now(UTC)))
            was_connected = connected
            if connected and self.announced == self.connection.connection:
                for group, edge in self.sessions.rebirths_due(now):
                    log.info("sparkplug rebirth requested", group=group, edge_node=edge)
                    self._queue(Outgoing(ncmd_topic(group, edge), encode(
                        now_ms(), None, [OutMetric(REBIRTH, DataType.Boolean, True)])))

    # --- downlink -----------------------------------------------------------------------
    def _downlink(self, message: Message) -> None:
        """A command or desired config the API published for a gateway's child: for a
        Sparkplug device, as DCMD (NCMD for the node's own metrics)."""
        parts = message.topic.split("/")
        gateway, device = parts[2], parts[4]
        if parts[-1] == "config":  # kept for any device: a birth may come later
            config = _json_object(message.payload)
            body = config.get("config") if config else None
            if isinstance(body, dict):
                self.desired[device] = body
                if self.sessions.edge_node_of(device) is not None:
                    self._write(device, body, None)
            else:
                self.desired.pop(device, None)  # cleared (unassigned or deleted)
            return
        command = _json_object(message.payload)
        if command is None or not self.sessions.knows_node(gateway):
            return  # not a Sparkplug node's (another gateway answers for its own)
        params = command.get("params")
        writes = dict(params) if isinstance(params, dict) and params else \
            {str(command.get("name")): True}
        self._write(device, writes, (message.topic + "/ack", str(command.get("id"))))

    def _write(self, device: str, writes: dict[str, Any],
               answer: tuple[str, str] | None) -> None:
        """The writes as one DCMD or NCMD; a command is answered `accepted` once it is
        sent, or `failed` saying why (not online, a metric its birth does not have, a value
        its datatype cannot hold, or the broker did not take it)."""
        def reply(status: str, result: dict[str, Any]) -> Outgoing | None:
            return None if answer is None else Outgoing(answer[0], orjson.dumps(
                {"id": answer[1], "status": status, "result": result}), qos=1)

        try:
            topic, metrics = self._command(device, writes)
            payload = encode(now_ms(), None, metrics)
        except SparkplugError as exc:
            if (failed := reply("failed", {"error": str(exc)})) is not None:
                self._queue(failed)
            return
        self._queue(Outgoing(topic, payload, then=reply(
            "accepted", {"sparkplug": topic.split("/")[2], "metrics": sorted(writes)}),
            otherwise=reply("failed", {"error": "not sent: the broker did not take it"})))

    def _command(self, device: str, writes: dict[str, Any]) -> tuple[str, list[OutMetric]]:
        node = self.sessions.edge_node_of(device)
        if node is None:
            raise SparkplugError(f"{device} is not online (no birth since its last death)")
        (group, edge), sparkplug_device, declared = node
        metrics = []
        for name, value in writes.items():
            known = declared.by_name.get(name)
            if known is None:
                raise SparkplugError(f"metric {name!r} is not in {device}'s birth")
            metrics.append(OutMetric(name, known.datatype, value))
        if sparkplug_device is None:
            return ncmd_topic(group, edge), metrics
        return dcmd_topic(group, edge, sparkplug_device), metrics

    # --- publishing, in order, off the intake path, after the online STATE -------------
    def _queue(self, message: Outgoing) -> None:
        self._outbox.put_nowait(message)

    async def _send(self) -> None:
        while True:
            message: Outgoing | None = await self._outbox.get()
            while self.announced != self.connection.connection or \
                    not self.connection.connected.is_set():
                await asyncio.sleep(TICK_SECONDS)
            while message is not None:
                sending = message
                try:
                    await self.connection.publish(sending.topic, sending.payload,
                                                  qos=sending.qos, retain=sending.retain)
                    message = sending.then
                except InsaError as exc:  # commands are not queued across outages
                    log.warning("sparkplug publish failed", topic=sending.topic,
                                error=str(exc))
                    message = sending.otherwise


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None
