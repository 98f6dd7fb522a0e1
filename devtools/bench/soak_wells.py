"""The soak's MQTT side: simulated wells publishing at QoS 1 and noting what the broker
acknowledged, and an alert subscriber with a persistent session. A broker that goes
away is expected: they reconnect, and resend what was not acknowledged."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.simulator.main import Device
from shared.mqtt import ALERTS_FILTER, telemetry_topic

QUIET = logging.getLogger("insa.soak.mqtt")  # the wells' clients: a broker restart is expected
QUIET.setLevel(logging.CRITICAL)


@dataclass
class Fleet:
    """What the wells published: every reading sent, and those the broker acknowledged."""

    sent: set[tuple[str, datetime]] = field(default_factory=set)
    acked: set[tuple[str, datetime]] = field(default_factory=set)
    reconnects: Counter[str] = field(default_factory=Counter)  # by error
    started: float = field(default_factory=time.time)


async def run_well(device: Device, device_id: str, password: str, port: int,
                   interval: float, fleet: Fleet, stop: asyncio.Event) -> None:
    """Publish a reading every `interval`; one the broker did not acknowledge (it went
    away) is sent again, with the same `ts`, on the next connection."""
    started, seq = time.monotonic(), 0
    payload: bytes | None = None
    await asyncio.sleep(random.uniform(0, interval))
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier=device_id,
                                      username=device_id, password=password, logger=QUIET,
                                      protocol=aiomqtt.ProtocolVersion.V5,
                                      keepalive=15, timeout=10) as client:
                while not stop.is_set():
                    if payload is None:
                        payload = device.payload(time.monotonic() - started, seq)
                        seq += 1
                    if payload is not None:
                        reading = (device_id, datetime.fromisoformat(orjson.loads(payload)["ts"]))
                        fleet.sent.add(reading)
                        await client.publish(telemetry_topic(device_id), payload, qos=1)
                        fleet.acked.add(reading)
                        payload = None
                    await asyncio.sleep(interval)
        except aiomqtt.MqttError as exc:
            fleet.reconnects[str(exc)[:80]] += 1
            await asyncio.sleep(1.0)


async def follow_alerts(port: int, password: str, received: list[int]) -> None:
    """An alert subscriber with a persistent session (until cancelled): what is published
    while it is away (the broker restarting) is queued for it."""
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="insa-subscriber",
                                      username="insa-subscriber", password=password, logger=QUIET,
                                      protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                                      properties=_session(3600), keepalive=15) as client:
                await client.subscribe(ALERTS_FILTER, qos=1)
                async for message in client.messages:
                    received.append(orjson.loads(message.payload)["id"])
        except aiomqtt.MqttError:
            await asyncio.sleep(1.0)


def _session(expiry: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return props


def quiet_mqtt_futures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The wells' clients when the broker goes: aiomqtt leaves a dropped connection's PUBACK
    futures unretrieved, and paho's socket callbacks may find their socket closed."""
    exc = context.get("exception")
    socket_gone = isinstance(exc, OSError) and "_writer" in repr(context.get("handle"))
    if not isinstance(exc, aiomqtt.MqttError) and not socket_gone:
        loop.default_exception_handler(context)
