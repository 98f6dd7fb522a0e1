"""What the pipeline needs from where messages come in: acks and pauses (the MQTT
connection, shared/mqtt_connection.py, or a test's stand-in)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from shared.mqtt_connection import Message


class Intake(Protocol):
    def ack_all(self, messages: Iterable[Message]) -> int:
        """Ack them; returns how many could not be, their connection being gone (the
        broker redelivers those)."""

    def pause(self) -> None:
        """Take no more messages until `resume`."""

    def resume(self) -> None: ...


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


class WithPaused:
    """`intake`, whose pauses also pause `others`: connections whose messages need no ack
    here (the Sparkplug host's QoS 0, acked on arrival) but must wait with it, so a full
    window holds them back in TCP and the broker instead of growing the batch."""

    def __init__(self, intake: Intake, *others: Pausable) -> None:
        self.intake, self.others = intake, others

    def ack_all(self, messages: Iterable[Message]) -> int:
        return self.intake.ack_all(messages)

    def pause(self) -> None:
        self.intake.pause()
        for other in self.others:
            other.pause()

    def resume(self) -> None:
        self.intake.resume()
        for other in self.others:
            other.resume()
