"""What the pipeline needs from where messages come in: the delivery, and acks and pauses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Delivery:
    """One inbound message and what is needed to ack it on the connection it came on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    redelivered: bool
    connection: int  # generation: acks for an older connection must not be sent


class Intake(Protocol):
    def ack(self, delivery: Delivery) -> bool:
        """Ack, or False when the connection it came on is gone (the broker redelivers)."""

    def pause(self) -> None:
        """Take no more messages until `resume`."""

    def resume(self) -> None: ...
