"""Healthy operations: what operators do to a well that is not a fault - VSD setpoint
steps, planned stops and restarts - and the scheduling of them in offline files."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.simulator.well import vsd_range

SETPOINT_LIMITS = (45.0, 62.0)     # what an operator would set on a healthy well
STEP_HZ = (1.0, 5.0)
STOP_MINUTES = (20.0, 180.0)
INRUSH_TIMES_NAMEPLATE = (2.5, 5.0)  # starting current, first reading after a start


@dataclass(frozen=True)
class Event:
    kind: str               # "setpoint_step" or "stop"
    start: float            # model seconds
    end: float              # restart time for a stop; equal to start for a step
    from_hz: float | None = None
    to_hz: float | None = None


@dataclass(frozen=True)
class Operations:
    """The operator's schedule for one well."""

    setpoint_hz: float
    events: tuple[Event, ...] = ()

    def setpoint(self, t: float) -> float:
        hz = self.setpoint_hz
        for e in self.events:
            if e.kind == "setpoint_step" and e.start <= t and e.to_hz is not None:
                hz = e.to_hz
        return hz

    def running(self, t: float) -> bool:
        return not any(e.kind == "stop" and e.start <= t < e.end for e in self.events)


class Scheduler:
    """Places one well's random steps and stops away from each other and from `busy`
    windows (a fault's development, so a healthy event never hides or imitates a
    labelled fault)."""

    MARGIN = 3600.0  # s between events

    def __init__(self, setpoint: float, duration: float, busy: list[tuple[float, float]],
                 rng: random.Random) -> None:
        self.setpoint, self.duration, self.rng = setpoint, duration, rng
        self.taken = list(busy)
        self.stops: list[Event] = []
        self.steps: list[float] = []

    def _slot(self, length: float) -> float | None:
        latest = 0.95 * self.duration - length
        for _ in range(50):
            start = self.rng.uniform(0.05 * self.duration, latest)
            if 0 < start < latest and all(
                    start + length + self.MARGIN < a or start > b + self.MARGIN
                    for a, b in self.taken):
                self.taken.append((start, start + length))
                return start
        return None

    def add_stop(self) -> bool:
        length = 60 * self.rng.uniform(*STOP_MINUTES)
        start = self._slot(length)
        if start is not None:
            self.stops.append(Event("stop", start, start + length))
        return start is not None

    def add_step(self) -> bool:
        start = self._slot(0.0)
        if start is not None:
            self.steps.append(start)
        return start is not None

    def operations(self) -> Operations:
        events, hz = list(self.stops), self.setpoint
        # ...and inside the range the drive is configured for.
        configured = vsd_range(self.setpoint)
        low, high = max(SETPOINT_LIMITS[0], configured[0] + 1), \
            min(SETPOINT_LIMITS[1], configured[1] - 1)
        for start in sorted(self.steps):
            # Operators move in round numbers, up or down, within the pump's healthy range.
            delta = round(self.rng.uniform(*STEP_HZ) * 2) / 2 * self.rng.choice((-1, 1))
            new = min(high, max(low, hz + delta))
            if new == hz:
                new = hz - delta
            events.append(Event("setpoint_step", start, start, hz, new))
            hz = new
        return Operations(self.setpoint, tuple(sorted(events, key=lambda e: e.start)))
