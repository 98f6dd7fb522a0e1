"""What every source (an OPC UA or Modbus TCP server) shares: connect and read until the
connection fails, then again, backing off on the shared retry policy; its state for the
status page; and the sink it hands readings and rejects to.

A server that goes away stops only its own source: the others, and the publisher, go on.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from services.edge.buffer import Buffer
from services.edge.metrics import EdgeMetrics
from services.edge.readings import Reading, Reject
from services.edge.rejects import Rejects
from shared.retry import Stopped, retry_until_available
from shared.timefmt import utc_text

log = structlog.get_logger(__name__)
RECONNECT_MIN_SECONDS = 0.5


class Sink:
    """Where sources put what they read: readings into the buffer (committed before the
    source reads on), and the points that yielded nothing into the rejects."""

    def __init__(self, buffer: Buffer, rejects: Rejects, metrics: EdgeMetrics) -> None:
        self.buffer = buffer
        self.rejects = rejects
        self.metrics = metrics

    async def take(self, source: str, readings: Sequence[Reading]) -> None:
        added = await self.buffer.add(readings)
        self.metrics.readings.labels(source).inc(added)
        self.metrics.buffered.set(self.buffer.depth)
        for reading in readings:
            if self.rejects.is_rejected(reading.device, reading.metric):
                await self.rejects.clear(reading.device, reading.metric)

    async def reject(self, reject: Reject) -> None:
        await self.rejects.record(reject)


@dataclass
class SourceState:
    """What the status page shows of a source."""

    name: str
    kind: str  # "opcua" | "modbus"
    target: str  # the endpoint or host:port
    connected: bool = False
    mode: str | None = None  # OPC UA: "subscription" or "polling"
    problem: str | None = None  # why it is not connected, or the last failure
    last_reading_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "target": self.target,
                "connected": self.connected, "mode": self.mode, "problem": self.problem,
                "last_reading_at": utc_text(self.last_reading_at)
                if self.last_reading_at is not None else None}


class Source(ABC):
    def __init__(self, state: SourceState, sink: Sink, reconnect_max_seconds: float) -> None:
        self.state = state
        self.sink = sink
        self.reconnect_max_seconds = reconnect_max_seconds

    @property
    def name(self) -> str:
        return self.state.name

    @abstractmethod
    async def connect(self) -> None:
        """Connect to the server, or raise (a transient error is retried)."""

    @abstractmethod
    async def serve(self, stop: asyncio.Event) -> None:
        """Read until `stop` (return) or until the connection fails (raise)."""

    @abstractmethod
    async def close(self) -> None:
        """Let the connection go; never raises."""

    @abstractmethod
    def is_transient(self, exc: BaseException) -> bool:
        """A failure of the server or the network, not of this program."""

    async def run(self, stop: asyncio.Event) -> None:
        what = f"{self.state.kind} {self.name}"
        while not stop.is_set():
            try:
                await retry_until_available(
                    self._connect_once, transient=self.is_transient, what=what,
                    initial=RECONNECT_MIN_SECONDS, max_delay=self.reconnect_max_seconds,
                    stop=stop, on_failure=self._failed)
            except Stopped:
                break
            self._connected(True)
            log.info("source connected", source=self.name, target=self.state.target)
            try:
                await self.serve(stop)
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                self._failed(exc)
                log.warning("source connection lost; reconnecting", source=self.name,
                            error=describe(exc))
            finally:
                self._connected(False)
                await self.close()

    async def _connect_once(self) -> None:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise

    def _connected(self, up: bool) -> None:
        self.state.connected = up
        if up:
            self.state.problem = None
        self.sink.metrics.source_up.labels(self.name).set(1 if up else 0)

    def _failed(self, exc: BaseException) -> None:
        self.state.problem = describe(exc)

    async def take(self, readings: Sequence[Reading]) -> None:
        if readings:
            await self.sink.take(self.name, readings)
            self.state.last_reading_at = time.time()


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
