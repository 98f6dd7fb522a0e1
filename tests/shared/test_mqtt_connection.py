"""The services' one MQTT connection against a real broker: a publish returns once the
broker has it and says why when it does not, `$CONTROL` commands are answered on the same
connection, manual acks hold a message until acked, and a restarted broker is
reconnected to."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from devtools.stack.servers import RunningBroker
from shared.broker_control import BrokerControl
from shared.errors import Conflict
from shared.health import Health
from shared.mqtt_connection import Message, MqttConnection, MqttUnavailable, Session
from shared.settings import CommonSettings
from tests.utils.mqtt_client import Clients
from tests.utils.tasks import until_stopped
from tests.utils.waiting import wait_until


def common(broker: RunningBroker) -> CommonSettings:
    return CommonSettings(env="development", database_url="postgresql://db/insa",
                          redis_url="redis://redis", mqtt_host="127.0.0.1",
                          mqtt_port=broker.port)


def connection(broker: RunningBroker, username: str, **kwargs: object) -> MqttConnection:
    return MqttConnection(common(broker), username, broker.credentials[username],
                          health=Health("mqtt"), **kwargs)  # type: ignore[arg-type]


async def test_publish_waits_for_the_broker_and_says_why_it_did_not_take_it(
        broker: RunningBroker) -> None:
    api = connection(broker, "insa-api")
    with pytest.raises(MqttUnavailable, match="not connected"):
        await api.publish("insa/devices/W-1/command", b"{}")
    async with until_stopped(api.run):
        await asyncio.wait_for(api.connected.wait(), 10)
        assert api.health.failures == {}

        await api.publish("insa/devices/W-1/command", b"{}")  # PUBACK: returns
        with pytest.raises(MqttUnavailable, match="refused the publish on insa/alerts/x"):
            await api.publish("insa/alerts/x", b"{}")  # not this account's topic

        control = BrokerControl(api)  # subscribes on the next connect: reconnect for it
        broker.stop()

        async def up() -> bool:
            return api.connected.is_set()

        await wait_until(up, lambda connected: not connected, what="the drop noticed")
        assert "mqtt" in api.health.failures
        broker.start()
        await asyncio.wait_for(api.connected.wait(), 20)
        assert await control.create_device("W-9")  # its password
        with pytest.raises(Conflict):
            await control.create_device("W-9")


async def test_a_message_is_redelivered_until_acked(broker: RunningBroker,
                                                    clients: Clients) -> None:
    received: asyncio.Queue[Message] = asyncio.Queue()
    ingestor = connection(broker, "insa-ingestor", manual_ack=True,
                          session=Session(expiry_seconds=300, receive_maximum=10),
                          subscriptions=[("insa/devices/+/telemetry",
                                          SubscribeOptions(qos=1))],
                          on_message=received.put_nowait)
    async with until_stopped(ingestor.run):
        await asyncio.wait_for(ingestor.connected.wait(), 10)
        device = clients.device("W-1")
        device.publish("insa/devices/W-1/telemetry", b'{"pip": 1}', qos=1)
        first = await asyncio.wait_for(received.get(), 10)
        assert (first.payload, first.redelivered) == (b'{"pip": 1}', False)
    # Gone without acking it: the next connection gets it again.
    async with until_stopped(ingestor.run):
        again = await asyncio.wait_for(received.get(), 10)
        assert again.payload == b'{"pip": 1}' and again.connection == first.connection + 1
        assert not ingestor.ack(first)  # an ack for the old connection is not sent
        assert ingestor.ack(again)
    async with until_stopped(ingestor.run):
        await asyncio.wait_for(ingestor.connected.wait(), 10)
        await asyncio.sleep(1)
        assert received.empty()  # acked: not redelivered


async def test_many_messages_over_tls_arrive_whole_in_order_and_are_acked_at_once(
        broker: RunningBroker, clients: Clients, dev_certs: Path) -> None:
    """The PUBLISHes split off the socket's bytes (shared/mqtt_packets.py) over TLS, whose
    decrypted records do not make the socket readable again: sizes from a few bytes to
    past a TLS record (16 KB), more than one read's worth, all of them, in order."""
    received: list[Message] = []
    tls = common(broker).model_copy(update={
        "mqtt_port": broker.spec.tls_port, "mqtt_tls": True,
        "mqtt_ca_file": dev_certs / "ca.crt"})
    ingestor = MqttConnection(tls, "insa-ingestor", broker.credentials["insa-ingestor"],
                              health=Health("mqtt"), manual_ack=True,
                              session=Session(expiry_seconds=300, receive_maximum=5000),
                              subscriptions=[("insa/devices/+/telemetry",
                                              SubscribeOptions(qos=1))],
                              on_message=received.append)
    sizes = [(n * 7919) % 40_000 for n in range(3000)]
    async with until_stopped(ingestor.run):
        await asyncio.wait_for(ingestor.connected.wait(), 10)
        device = clients.device("W-1")
        device.publish_many([("insa/devices/W-1/telemetry", n.to_bytes(4, "big") + b"x" * size)
                             for n, size in enumerate(sizes)])

        async def count() -> int:
            return len(received)

        await wait_until(count, lambda n: n >= len(sizes), timeout=60, what="every message")
        assert [int.from_bytes(m.payload[:4], "big") for m in received] == list(range(3000))
        assert [len(m.payload) - 4 for m in received] == sizes
        assert ingestor.ack_all(received) == 0
    async with until_stopped(ingestor.run):  # acked in one write: none comes again
        await asyncio.wait_for(ingestor.connected.wait(), 10)
        await asyncio.sleep(1)
        assert len(received) == len(sizes)
