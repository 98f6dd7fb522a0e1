"""What the pipeline needs from where messages come in: acks and pauses (the MQTT
connection, shared/mqtt_connection.py, or a test's stand-in)."""

from __future__ import annotations

from typing import Protocol

from shared.mqtt_connection import Message


class Intake(Protocol):
    def ack(self, message: Message) -> bool:
        """Ack, or False when the connection it came on is gone (the broker redelivers)."""

    def pause(self) -> None:
        """Take no more messages until `resume`."""

    def resume(self) -> None: ...
