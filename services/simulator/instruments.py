"""What the controller publishes: the true values seen through this well's transmitters -
noise, resolution, its unit system, missing sensors, a failed transmitter - and the
harmless glitches of real telemetry (single-sample spikes, gaps, dropped metrics)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from services.simulator.faults import FaultPlan
from services.simulator.units import CANONICAL, from_canonical, quantize
from services.simulator.well import NOISE, WellSpec

DAY = 86400.0


@dataclass(frozen=True)
class GlitchRates:
    """Expected glitches per well per day (0 disables one kind)."""

    spikes: float = 2.0           # one metric, one reading, far off
    gaps: float = 0.7             # a run of readings never sent
    drops: float = 12.0           # one reading lacking a metric or two
    gap_seconds: tuple[float, float] = (300.0, 2400.0)


NO_GLITCHES = GlitchRates(0.0, 0.0, 0.0)
LIVE_GLITCHES = GlitchRates(spikes=2.0, gaps=0.0, drops=12.0)  # MQTT: the network gaps itself

# Meters that read exactly zero with the motor/flow stopped (low-flow cutoff, no signal).
ZERO_CUTOFF = ("flow_rate", "motor_current", "motor_voltage", "vsd_frequency", "power")


@dataclass
class Instruments:
    spec: WellSpec
    fault: FaultPlan | None
    rng: random.Random
    glitches: GlitchRates = field(default_factory=GlitchRates)
    log: list[dict[str, float | str]] = field(default_factory=list)  # glitches, for labels
    _last_t: float | None = None
    _gap_until: float = -1.0
    _stuck: float | None = None
    _announced: set[str] = field(default_factory=set)
    _count: int = 0

    def read(self, t: float, truth: dict[str, float]) -> dict[str, float] | None:
        """Published values in the device's units at t, or None when nothing is sent."""
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        g, rng = self.glitches, self.rng
        if t < self._gap_until:
            return None
        if g.gaps and rng.random() < g.gaps * dt / DAY:
            self._gap_until = t + rng.uniform(*g.gap_seconds)
            self.log.append({"kind": "gap", "start": t, "end": self._gap_until})
            return None
        values: dict[str, float] = {}
        for metric in self.spec.sensors:
            true = truth[metric]
            if metric in ZERO_CUTOFF and true <= 0:
                value = 0.0
            else:
                absolute, relative = NOISE[metric]
                sigma = (absolute + relative * abs(true)) * self.spec.noise_factor
                value = true + rng.gauss(0, sigma)
                if metric in ("flow_rate", "vibration", "gor"):
                    value = max(0.0, value)
            unit = self.spec.units[metric]
            values[metric] = quantize(metric, from_canonical(metric, value, unit), unit)
        if g.spikes and rng.random() < g.spikes * dt / DAY:
            metric = rng.choice([m for m in values if m != "vsd_frequency"])
            factor = rng.choice((rng.uniform(1.5, 4.0), rng.uniform(0.0, 0.5)))
            unit = self.spec.units[metric]
            values[metric] = quantize(metric, values[metric] * factor, unit)
            self.log.append({"kind": "spike", "start": t, "end": t, "metric": metric})
        self._transmitter_fault(t, values)
        if g.drops and rng.random() < g.drops * dt / DAY and len(values) > 2:
            for metric in rng.sample(sorted(values), rng.choice((1, 2))):
                del values[metric]
        return values

    def _transmitter_fault(self, t: float, values: dict[str, float]) -> None:
        sensor = self.fault.sensor if self.fault else None
        if sensor is None or self.fault is None or t < self.fault.onset:
            return
        metric, mode, value = sensor
        if metric not in values:
            return
        if mode == "stuck":
            if self._stuck is None:
                self._stuck = values[metric]    # frozen at its last good output
            values[metric] = self._stuck
        elif value is not None:
            values[metric] = value

    @property
    def states_units(self) -> bool:
        """False for a controller in canonical units that never says so."""
        units = self.spec.units
        return self.spec.unit_every > 0 or any(units[m] != CANONICAL[m] for m in units)

    def telemetry(self, values: dict[str, float]) -> dict[str, object]:
        """The reading's telemetry object: bare numbers, or {"value", "unit"} where the
        controller states its unit (first sight of a metric, then every n readings)."""
        every, units = self.spec.unit_every, self.spec.units
        out: dict[str, object] = {}
        for metric, value in values.items():
            due = every > 0 and self._count % every == 0
            if self.states_units and (due or metric not in self._announced):
                self._announced.add(metric)
                out[metric] = {"value": value, "unit": units[metric]}
            else:
                out[metric] = value
        self._count += 1
        return out
