"""What the diagnosis engine keeps per well: its baseline and phase, recent readings, and
per diagnosis the recent findings and what stands now."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from shared.diagnosis.baseline import Baseline
from shared.diagnosis.sensors import Key, SpikeWatch

RECENT_READINGS = 24


@dataclass(slots=True)
class Active:
    rank: int
    confidence: float
    evidence: dict[str, Any]
    since: float


@dataclass(slots=True)
class Tracker:
    """The recent findings of one diagnosis on one well (ranks, newest last)."""

    ranks: deque[int]
    misses: int = 0

    def confirmed(self, needed: int) -> int:
        for rank in (3, 2, 1):
            if sum(r >= rank for r in self.ranks) >= needed:
                return rank
        return 0


@dataclass
class WellState:
    baseline: Baseline = field(default_factory=Baseline)
    phase: str = "warmup"  # warmup | normal | stopped | starting | settling
    phase_readings: int = 0
    phase_since: float = 0.0
    learned: int = 0
    last_ts: float = -math.inf
    recent: deque[dict[str, float]] = field(
        default_factory=lambda: deque(maxlen=RECENT_READINGS))
    trackers: dict[Key, Tracker] = field(default_factory=dict)
    active: dict[Key, Active] = field(default_factory=dict)
    flat: dict[str, tuple[float, int]] = field(default_factory=dict)
    spikes: dict[str, SpikeWatch] = field(default_factory=dict)
    since_cause: dict[str, int] = field(default_factory=dict)  # readings since a cause showed
    superseded: dict[str, str] = field(default_factory=dict)  # code -> the one that replaced it
    at_reference: float = -math.inf  # when the frequency last sat at the reference
    # The last start, settled setpoint step or gap in the data (View.temp_settled).
    load_changed: float = -math.inf
    judged: int = 0  # readings judged (_judge calls)
    shown: dict[str, int] = field(default_factory=dict)  # code -> `judged` when it last showed
