"""The Sparkplug B 3.0 Primary Host Application, in the ingestor (docs/architecture.md,
"Sparkplug B host").

Its own connection (account `insa-sparkplug`): a clean session, as the specification
requires, with a Will `{"online": false, "timestamp": T}` retained on
`spBv1.0/STATE/<host_id>`; it subscribes to `spBv1.0/#` and its own STATE, then publishes
`online: true` with the same T, and again whenever it sees itself declared offline. What
the edge nodes send goes through sparkplug.py into the ingestor's pipeline, like any
reading. Commands and desired config the API publishes for a Sparkplug device (on its
gateway's tree, as for any gateway's child) go out as DCMD, or NCMD for the node's own
metrics; a rebirth request is an NCMD `Node Control/Rebirth`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.ingestor.batch import Parsed
from services.ingestor.pipeline import Pipeline
from services.ingestor.settings import IngestorSettings
from services.ingestor.sparkplug import REBIRTH, Outcome, SparkplugSessions, Triggers
from shared.errors import InsaError
from shared.health import Health
from shared.lifecycle import wait_any
from shared.mqtt import ANY, child_topic
from shared.mqtt_connection import Message, MqttConnection, Will
from shared.settings import CommonSettings
from shared.sparkplug import SparkplugError
from shared.sparkplug.payload import DataType, OutMetric, encode
from shared.sparkplug.topics import (
    NAMESPACE,
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
            pipeline.parser.limits)
        self.timestamp = 0  # T of the current connection's Will and online STATE
        self.desired: dict[str, dict[str, Any]] = {}  # device -> its desired config
        qos1 = SubscribeOptions(qos=1)
        self.connection = MqttConnection(
            common, settings.sparkplug_username,
            settings.sparkplug_password.get_secret_value(), health=health,
            subscriptions=[(f"{NAMESPACE}/#", qos1), (COMMANDS, qos1), (CONFIGS, qos1)],
            on_message=self.on_message, will=self._will, health_key="sparkplug")
        self._outbox: asyncio.Queue[tuple[str, bytes, int, bool]] = asyncio.Queue()

    def _will(self) -> Will:
        self.timestamp = int(time.time() * 1000)
        return Will(self.state_topic, state_payload(False, self.timestamp), qos=1, retain=True)

    async def run(self, stop: asyncio.Event) -> None:
        disconnect = asyncio.Event()  # after the offline STATE, when stopping
        async with asyncio.TaskGroup() as group:
            group.create_task(self.connection.run(disconnect), name="sparkplug-mqtt")
            group.create_task(self._announce(stop), name="sparkplug-state")
            group.create_task(self._send(stop), name="sparkplug-send")
            group.create_task(self._tick(stop), name="sparkplug-gaps")
            await stop.wait()
            await self._offline()
            disconnect.set()

    async def _offline(self) -> None:
        """An intentional disconnect says so first: `online: false` with this connect's T
        (the broker discards the Will on a clean DISCONNECT)."""
        if not self.connection.connected.is_set():
            return
        try:
            await self.connection.publish(self.state_topic, state_payload(False, self.timestamp),
                                          retain=True, timeout=OFFLINE_TIMEOUT_SECONDS)
        except InsaError as exc:
            log.warning("sparkplug offline STATE not published", error=str(exc))

    # --- STATE --------------------------------------------------------------------------
    async def _announce(self, stop: asyncio.Event) -> None:
        """`online: true` after each connect (its subscriptions already sent), with that
        connect's T; tried again until the broker has it."""
        announced = 0
        while not stop.is_set():
            await wait_any(self.connection.connected, stop)
            if stop.is_set():
                return
            connection = self.connection.connection
            if connection != announced:
                try:
                    await self.connection.publish(
                        self.state_topic, state_payload(True, self.timestamp), retain=True)
                    announced = connection
                    log.info("sparkplug host online", host_id=self.host_id,
                             timestamp=self.timestamp)
                except InsaError as exc:
                    log.warning("sparkplug STATE not published", error=str(exc))
            await wait_any(stop, timeout=TICK_SECONDS)

    # --- intake -------------------------------------------------------------------------
    def on_message(self, message: Message) -> None:
        received = datetime.now(UTC)
        try:
            if message.topic == self.state_topic:
                self._own_state(message.payload)
            elif message.topic.startswith(NAMESPACE + "/"):
                topic = parse_topic(message.topic)
                if topic is not None:
                    # Acked on arrival by this connection: never by the ingestor's.
                    self._take(self.sessions.receive(topic, replace(message, qos=0),
                                                     received, time.monotonic()))
            else:
                self._downlink(message)
        except SparkplugError as exc:  # a malformed topic: recorded like any reject
            delivery = replace(message, qos=0)
            self.pipeline.submit(Parsed(delivery, None, received, "unknown", reject=(
                self.pipeline.parser.reject(delivery, None, "bad_sparkplug", str(exc)))))

    def _own_state(self, payload: bytes) -> None:
        try:
            online, timestamp = parse_state(payload)
        except SparkplugError:
            online, timestamp = False, self.timestamp
        if not online and timestamp == self.timestamp and self.connection.connected.is_set():
            log.warning("sparkplug host declared offline while connected; online again")
            self._queue(self.state_topic, state_payload(True, self.timestamp), 1, True)

    def _take(self, outcome: Outcome) -> None:
        for item in outcome.items:
            self.pipeline.submit(item)
        for group, edge in outcome.rebirth:
            log.info("sparkplug rebirth requested", group=group, edge_node=edge)
            self._queue(ncmd_topic(group, edge), encode(
                int(time.time() * 1000), None,
                [OutMetric(REBIRTH, DataType.Boolean, True)]), 0, False)
        for device in outcome.born:
            if device in self.desired:
                self._write(device, self.desired[device], None)

    async def _tick(self, stop: asyncio.Event) -> None:
        while not await wait_any(stop, timeout=TICK_SECONDS):
            self._take(self.sessions.expire_gaps(time.monotonic()))

    # --- downlink -----------------------------------------------------------------------
    def _downlink(self, message: Message) -> None:
        """A command or desired config the API published for a gateway's child: for a
        Sparkplug device this host knows, as DCMD (NCMD for the node's own metrics)."""
        parts = message.topic.split("/")
        device = parts[4]
        if self.sessions.edge_node_of(device) is None:
            return  # not a Sparkplug device, or one not born since this host started
        try:
            body = orjson.loads(message.payload) if message.payload else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        if parts[-1] == "config":
            config = body.get("config")
            if isinstance(config, dict):
                self.desired[device] = config
                self._write(device, config, None)
        else:
            params = body.get("params")
            writes = dict(params) if isinstance(params, dict) and params else \
                {str(body.get("name")): True}
            self._write(device, writes, (message.topic + "/ack", str(body.get("id"))))

    def _write(self, device: str, writes: dict[str, Any],
               answer: tuple[str, str] | None) -> None:
        """The writes as one DCMD or NCMD; a command is answered `accepted` once sent, or
        `failed` saying which metric the device's birth does not have or cannot hold."""
        try:
            topic, metrics = self._command(device, writes)
            payload = encode(int(time.time() * 1000), None, metrics)
        except SparkplugError as exc:
            if answer is not None:
                self._queue(answer[0], orjson.dumps({"id": answer[1], "status": "failed",
                                                     "result": {"error": str(exc)}}), 1, False)
            return
        self._queue(topic, payload, 0, False)
        if answer is not None:
            self._queue(answer[0], orjson.dumps(
                {"id": answer[1], "status": "accepted",
                 "result": {"sparkplug": topic.split("/")[2],
                            "metrics": sorted(writes)}}), 1, False)

    def _command(self, device: str, writes: dict[str, Any]) -> tuple[str, list[OutMetric]]:
        node = self.sessions.edge_node_of(device)
        if node is None:
            raise SparkplugError(f"{device} is not a Sparkplug device this host knows")
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

    # --- publishing, in order, off the intake path -------------------------------------
    def _queue(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self._outbox.put_nowait((topic, payload, qos, retain))

    async def _send(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                topic, payload, qos, retain = await asyncio.wait_for(self._outbox.get(),
                                                                     TICK_SECONDS)
            except TimeoutError:
                continue
            try:
                await self.connection.publish(topic, payload, qos=qos, retain=retain)
            except InsaError as exc:  # Sparkplug commands are not queued across outages
                log.warning("sparkplug publish failed", topic=topic, error=str(exc))
