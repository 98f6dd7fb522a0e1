"""Drains the buffer to the broker as the gateway (docs/payloads.md, "Gateways").

The oldest buffered readings go out in one message on `insa/gateways/<gw>/telemetry`,
keyed by device, each reading with its own `ts` and each value with its unit:

    {"W-101": [{"ts": "2026-12-07T10:30:00Z",
                "telemetry": {"pip": {"value": 850.0, "unit": "psi"}, "motor_current": 41.2}}]}

published at QoS 1 and deleted from the buffer only once the broker has acknowledged it
(PUBACK); a publish that fails is retried on the shared retry policy, the same message
again. So delivery to the broker is at least once: a message whose acknowledgement was
lost with the connection comes again, with the same readings and times, and the
platform stores each (device, metric, ts) once.

The gateway's status, retained on `insa/gateways/<gw>/status`, is `online` on every
connection (the Will, `offline`, stands for it when the connection drops) and `offline`
when the program stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from services.edge.buffer import Buffer, Stored
from services.edge.metrics import EdgeMetrics
from services.edge.readings import from_epoch_us
from shared.lifecycle import wait_any
from shared.mqtt import gateway_topic
from shared.mqtt_connection import MqttConnection, MqttUnavailable
from shared.retry import Stopped, retry_until_available
from shared.timefmt import utc_text

log = structlog.get_logger(__name__)

# Below the ingestor's default INSA_INGESTOR_MAX_PAYLOAD_BYTES (256 KiB): a larger batch
# is split.
MAX_PAYLOAD_BYTES = 200_000
IDLE_CHECK_SECONDS = 1.0  # while idle, how soon a new connection is announced online
RETRY_MIN_SECONDS = 0.5
OFFLINE_TIMEOUT_SECONDS = 2.0
ONLINE, OFFLINE = b"online", b"offline"


def telemetry_payload(rows: Sequence[Stored]) -> bytes:
    """One gateway message: readings grouped by device, then by time."""
    devices: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        r = row.reading
        value = r.value if r.unit is None else {"value": r.value, "unit": r.unit}
        devices.setdefault(r.device, {}).setdefault(r.ts_us, {})[r.metric] = value
    return orjson.dumps({
        device: [{"ts": utc_text(from_epoch_us(ts_us)), "telemetry": telemetry}
                 for ts_us, telemetry in sorted(readings.items())]
        for device, readings in devices.items()})


def status_topic(gateway: str) -> str:
    return gateway_topic(gateway, "status")


class Publisher:
    def __init__(self, gateway: str, mqtt: MqttConnection, buffer: Buffer,
                 metrics: EdgeMetrics, *, batch_readings: int,
                 retry_max_seconds: float) -> None:
        self.topic = gateway_topic(gateway, "telemetry")
        self.status_topic = status_topic(gateway)
        self.mqtt = mqtt
        self.buffer = buffer
        self.metrics = metrics
        self.batch_readings = batch_readings
        self.retry_max_seconds = retry_max_seconds
        self.announced = 0  # the connection `online` was last published on
        self.problem: str | None = None  # why the last publish failed, until one succeeds

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await wait_any(self.mqtt.connected, stop)
                if stop.is_set():
                    break
                await self.announce()
                self.buffer.added.clear()  # before looking: an add from now on wakes us
                rows = await self.buffer.oldest(self.batch_readings)
                if rows:
                    await self.send(rows, stop)
                else:
                    await wait_any(self.buffer.added, stop, timeout=IDLE_CHECK_SECONDS)
        except Stopped:
            pass
        finally:
            await self.say_offline()

    async def send(self, rows: list[Stored], stop: asyncio.Event) -> None:
        payload = telemetry_payload(rows)
        while len(payload) > MAX_PAYLOAD_BYTES and len(rows) > 1:
            rows = rows[:len(rows) // 2]
            payload = telemetry_payload(rows)

        async def attempt() -> None:
            await wait_any(self.mqtt.connected, stop)  # not before the connection is back
            if stop.is_set():
                raise Stopped("publisher")
            await self.mqtt.publish(self.topic, payload, qos=1)

        await retry_until_available(
            attempt, transient=lambda exc: isinstance(exc, MqttUnavailable),
            what="broker publish", initial=RETRY_MIN_SECONDS,
            max_delay=self.retry_max_seconds, stop=stop, on_failure=self.failed)
        self.problem = None
        await self.buffer.remove(row.id for row in rows)
        self.metrics.messages.inc()
        self.metrics.published.inc(len(rows))
        self.metrics.buffered.set(self.buffer.depth)

    def failed(self, exc: BaseException) -> None:
        self.problem = str(exc)

    async def announce(self) -> None:
        """`online`, retained, once per connection (a failure is tried again next round)."""
        connection = self.mqtt.connection
        if connection == self.announced:
            return
        try:
            await self.mqtt.publish(self.status_topic, ONLINE, qos=1, retain=True)
        except MqttUnavailable as exc:
            log.warning("gateway status not published", error=str(exc))
            return
        self.announced = connection

    async def say_offline(self) -> None:
        if not self.mqtt.connected.is_set():
            return  # the Will says it
        try:
            await self.mqtt.publish(self.status_topic, OFFLINE, qos=1, retain=True,
                                    timeout=OFFLINE_TIMEOUT_SECONDS)
        except MqttUnavailable as exc:
            log.warning("gateway offline status not published", error=str(exc))
