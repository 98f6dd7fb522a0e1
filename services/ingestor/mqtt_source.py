"""The ingestor's subscription: devices' and gateways' telemetry and status in a
persistent session (all of them, or a partitioned replica's own), acked only once the
data is committed and streamed (the connection itself is shared/mqtt_connection.py, with
`manual_ack`)."""

from __future__ import annotations

from collections.abc import Callable

from paho.mqtt.subscribeoptions import SubscribeOptions

from services.ingestor.settings import IngestorSettings
from shared.health import Health
from shared.mqtt import DEVICE_FILTERS, GATEWAY_FILTERS
from shared.mqtt_connection import Message, MqttConnection, Session
from shared.partition import Partition
from shared.settings import CommonSettings

# Retained statuses only when the subscription is new (their age is unknown, so replaying
# them would mislead).
OPTIONS = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)


def device_messages(common: CommonSettings, settings: IngestorSettings,
                    health: Health) -> MqttConnection:
    # Plain subscriptions in a persistent session: the broker keeps them, and queues for
    # them, across its own restarts ($share ones it forgets in Mosquitto 2.0).
    # Partitioned, a replica subscribes to its own devices' and gateways' topics instead
    # (services/ingestor/subscriptions.py) and drops the catch-all filters a session of
    # the single-replica layout may hold.
    wildcards = (*DEVICE_FILTERS, *GATEWAY_FILTERS)
    connection = MqttConnection(
        common, settings.mqtt_username, settings.mqtt_password.get_secret_value(),
        health=health, manual_ack=True,
        subscriptions=[] if settings.partitions > 1 else [(f, OPTIONS) for f in wildcards],
        session=Session(settings.session_expiry_seconds, settings.receive_maximum))
    if settings.partitions > 1:
        connection.retire(wildcards)
    return connection


def for_this_replica(connection: MqttConnection, partition: Partition,
                     deliver: Callable[[Message], None],
                     on_skipped: Callable[[], None]) -> Callable[[Message], None]:
    """Hand on this replica's devices' messages; ack the others at once (another
    replica's own session has a copy of each: they come only while a session still holds
    a filter of an earlier layout)."""
    def on_message(message: Message) -> None:
        if partition.owns_topic(message.topic):
            deliver(message)
        else:
            connection.ack(message)
            on_skipped()
    return on_message
