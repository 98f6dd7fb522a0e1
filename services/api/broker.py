"""The API's one broker connection (account `insa-api`, shared/mqtt_connection.py):
dynamic-security commands for device provisioning (shared/broker_control.py), downlink
publishes (commands, config), HTTP-ingested readings, and the devices' command answers
(from the devices or their gateways).
One connection, because the broker binds the account to one client id: a second
connection would knock the first off."""

from __future__ import annotations

from collections.abc import Callable

from paho.mqtt.subscribeoptions import SubscribeOptions

from services.api.settings import ApiSettings
from shared.broker_control import BrokerControl
from shared.health import Health
from shared.mqtt import CHILD_COMMAND_ACK_FILTER, COMMAND_ACK_FILTER
from shared.mqtt_connection import MqttConnection
from shared.settings import CommonSettings

RECONNECT_MAX_SECONDS = 10.0


def api_connection(common: CommonSettings, settings: ApiSettings, health: Health,
                   received: Callable[[str, bytes], None]
                   ) -> tuple[MqttConnection, BrokerControl]:
    """The connection (command answers go to `received`) and its `$CONTROL` client."""
    mqtt = MqttConnection(common, settings.mqtt_username,
                          settings.mqtt_password.get_secret_value(), health=health,
                          subscriptions=[(f, SubscribeOptions(qos=1))
                                         for f in (COMMAND_ACK_FILTER, CHILD_COMMAND_ACK_FILTER)],
                          on_message=lambda message: received(message.topic, message.payload),
                          reconnect_max_seconds=RECONNECT_MAX_SECONDS)
    return mqtt, BrokerControl(mqtt)
