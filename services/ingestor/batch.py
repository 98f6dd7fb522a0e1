"""What the ingestor accumulates between flushes: parsed messages and their acks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from shared.mqtt_connection import Message
from shared.readings import Reading, StatusChange


@dataclass(slots=True)
class Reject:
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes
    payload_size: int
    count: int = 1  # messages this record stands for (rate_limited ones are merged)


class Parsed(msgspec.Struct):  # built in C: one per message (shared/readings.py)
    """One delivery after parsing: readings, a status change, or a reject. A gateway's
    batch is one delivery with a part per child device (acked once, when all are
    committed); a part is a Parsed of its own for everything else."""

    delivery: Message
    device_id: str | None
    received: datetime
    # telemetry | metric | status | gateway_telemetry | gateway_status | unknown (topic)
    kind: str = "unknown"
    readings: list[Reading] = []  # msgspec copies an empty default per instance
    status: StatusChange | None = None
    reject: Reject | None = None
    gateway: str | None = None  # the gateway that published it for its child device
    parts: list[Parsed] = []


@dataclass(slots=True)
class Batch:
    items: list[Parsed] = field(default_factory=list)
    started: float = 0.0  # monotonic time of the first item

    def add(self, item: Parsed) -> None:
        if not self.items:
            self.started = time.monotonic()
        self.items.append(item)

    def take(self, count: int) -> list[Parsed]:
        """Remove and return the oldest `count` items (the rest keep their age)."""
        taken, self.items = self.items[:count], self.items[count:]
        return taken

    def __len__(self) -> int:
        return len(self.items)

    def age(self) -> float:
        return time.monotonic() - self.started if self.items else 0.0
