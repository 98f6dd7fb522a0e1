"""How many messages are held unacked, and pausing intake so that stays bounded."""

from __future__ import annotations

from services.ingestor.intake import Intake
from services.ingestor.metrics import IngestorMetrics


class FlowControl:
    """Pause intake at the receive window, resume at half of it; draining pauses for good.

    Mosquitto 2.0.11 releases a whole window per PUBACK instead of one message, so the
    broker's Receive Maximum cannot be relied on to bound what the ingestor holds.
    """

    def __init__(self, window: int, intake: Intake, metrics: IngestorMetrics) -> None:
        self.window = window
        self.intake = intake
        self.pending = 0  # received, not yet acked
        self.high_water = 0
        self.draining = False
        # Read when scraped: a Gauge.set per message took a lock, 2 % of the CPU.
        metrics.pending.set_function(lambda: self.pending)
        metrics.pending_high_water.set_function(lambda: self.high_water)

    def received(self) -> None:
        self.pending += 1
        if self.pending > self.high_water:
            self.high_water = self.pending
        if self.pending >= self.window:
            self.intake.pause()

    def settled(self, count: int) -> None:
        """`count` held messages were acked (or their connection is gone)."""
        self.pending -= count
        if self.pending <= self.window // 2 and not self.draining:
            self.intake.resume()

    def drain(self) -> None:
        """Take nothing new, so what is held can be committed and acked in time."""
        self.draining = True
        self.intake.pause()
