"""A well's own normal: per metric a running level, and the transmitter's noise.

The level is learned at the reference VSD frequency; the affinity laws scale it to the
present frequency (flow ∝ f, head ∝ f², power ∝ f³; motor current, whose load part
follows torque ∝ f² over a constant magnetizing part, roughly ∝ f^1.5), so a setpoint
change moves the expectation with it instead of looking like a fault.

After a warm-up the level moves with a time constant of hours (set by the engine), and
each step is clipped at a few noise sigmas: the slow drifts of a healthy well are
followed, a fault developing over hours is not learned as normal. Noise is estimated
from the change between consecutive readings, so a drifting level does not inflate it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import NamedTuple

AFFINITY_EXPONENT = {"flow_rate": 1.0, "head": 2.0, "power": 3.0, "motor_current": 1.5}
# Smallest noise worth trusting, per metric in canonical units (a transmitter's
# resolution): without it a quiet signal would make any wiggle an anomaly.
NOISE_FLOOR = {"flow_rate": 5.0, "pip": 2.0, "discharge_pressure": 3.0,
               "wellhead_pressure": 1.0, "head": 3.0, "motor_current": 0.2,
               "motor_voltage": 2.0, "motor_temp": 0.3, "intake_temp": 0.3,
               "vibration": 0.02, "vsd_frequency": 0.05, "gor": 5.0, "power": 0.5}
RELATIVE_NOISE_FLOOR = 0.004
TYPICAL_RISE_DEGC = 25.0  # a winding's rise over the intake, where the intake is not read
CLIP_SIGMAS = 3.0
NOISE_ALPHA = 0.02  # per reading: the noise estimate follows the transmitter, not time
# |x[i] - x[i-1]| of white noise averages 2·sigma/sqrt(pi).
STEP_TO_SIGMA = math.sqrt(math.pi) / 2


class Band(NamedTuple):
    """Frequencies from `low` to `high`."""

    low: float
    high: float


class Heading(NamedTuple):
    """A temperature on its way from `start` to `target`."""

    start: float
    target: float


@dataclass(slots=True)
class Level:
    """Running level of one metric, and how much it moves from one reading to the next."""

    mean: float
    step: float = 0.0  # mean absolute change between consecutive readings
    count: int = 1
    repeats: int = 0  # readings equal to the one before: how coarse the transmitter is
    last: float = 0.0
    floor: float = 0.0  # the smallest noise worth trusting (NOISE_FLOOR)

    def learn(self, value: float, alpha: float, warmup: int) -> None:
        change = abs(value - self.last)
        if change == 0:
            self.repeats += 1
        self.last = value
        self.count += 1
        if self.count <= warmup:  # cumulative averages while there is little to go on
            self.mean += (value - self.mean) / self.count
            self.step += (change - self.step) / (self.count - 1)
            return
        limit = CLIP_SIGMAS * self.step * STEP_TO_SIGMA
        self.mean += alpha * max(-limit, min(limit, value - self.mean))
        self.step += NOISE_ALPHA * (min(change, 5 * self.step) - self.step)

    def repeats_for_flatline(self, at_least: int) -> int | None:
        """Identical readings in a row that this transmitter would show by chance about
        once in a billion (a fleet makes millions of readings a day); None when it
        repeats too often to tell a stuck one."""
        rate = self.repeats / self.count
        if self.count < 10 or rate > 0.4:
            return None
        if rate < 1e-3:
            return at_least
        return max(at_least, math.ceil(math.log(1e-9) / math.log(rate)))


class Baseline:
    """The learned normal of one well."""

    def __init__(self) -> None:
        self.levels: dict[str, Level] = {}
        self.reference_hz: float | None = None  # the frequency levels are kept at
        # Where the well is normally run: the lowest and highest operating points it has
        # settled at, widened by a setpoint step only within `inside` (a drive gone out
        # of range is not a new normal).
        self.hz_band: Band | None = None
        self.pip_before: float | None = None  # PIP's level before the last rebase
        # The winding's temperature at the last rebase and where it is heading: between
        # the two it is on its way, no anomaly.
        self.temp_on_its_way: Heading | None = None

    def learn(self, values: dict[str, float], alpha: float, warmup: int) -> None:
        scale = self._to_reference(values.get("vsd_frequency"))
        for metric, value in values.items():
            exponent = AFFINITY_EXPONENT.get(metric)
            if exponent is not None and scale is not None:
                value *= scale ** exponent
            level = self.levels.get(metric)
            if level is None:
                self.levels[metric] = Level(value, last=value,
                                            floor=NOISE_FLOOR.get(metric, 0.0))
            else:
                level.learn(value, alpha, warmup)
        heading, temp = self.temp_on_its_way, values.get("motor_temp")
        if heading is not None and temp is not None and temp >= heading.target:
            self.temp_on_its_way = None  # got there
        frequency = values.get("vsd_frequency")
        if frequency is not None and self.reference_hz is None:
            self.reference_hz = frequency
            self.hz_band = Band(frequency, frequency)

    def _to_reference(self, frequency: float | None) -> float | None:
        if frequency is None or self.reference_hz is None or frequency <= 0:
            return None
        return self.reference_hz / frequency

    def expected(self, metric: str, frequency: float | None) -> float | None:
        """The metric's normal at `frequency` (None when not learned)."""
        level = self.levels.get(metric)
        if level is None:
            return None
        exponent = AFFINITY_EXPONENT.get(metric)
        scale = self._to_reference(frequency)
        if exponent is None or scale is None:
            return level.mean
        return level.mean / scale ** exponent

    def expectations(self, frequency: float | None) -> dict[str, float]:
        """Every learned metric's normal at `frequency`, at once (one reading's worth)."""
        scale = self._to_reference(frequency)
        if scale is None:
            return {metric: level.mean for metric, level in self.levels.items()}
        return {metric: level.mean / scale ** AFFINITY_EXPONENT[metric]
                if metric in AFFINITY_EXPONENT else level.mean
                for metric, level in self.levels.items()}

    def sigma(self, metric: str) -> float | None:
        """The metric's noise, as a standard deviation."""
        level = self.levels.get(metric)
        if level is None:
            return None
        return max(level.step * STEP_TO_SIGMA, level.floor,
                   RELATIVE_NOISE_FLOOR * abs(level.mean))

    def rebase(self, recent: list[dict[str, float]],
               inside: tuple[float | None, float | None] = (None, None)) -> None:
        """After an operator's setpoint step has settled: the new operating point is normal.

        Levels move to the recent readings' medians at the new frequency; the noise
        stays (a transmitter's noise does not change with a setpoint). Two lag: the
        annulus takes hours to settle, so PIP's level before is kept beside (`pip_before`:
        a restart's full annulus is not the new normal to be drawn down from); and the
        winding's temperature lags its load by tens of minutes, so its level goes at least
        to where the new current and flow will take it.
        """
        frequencies = [r["vsd_frequency"] for r in recent if "vsd_frequency" in r]
        if not frequencies:
            return
        current_before = self.expected("motor_current", self.reference_hz)
        temp_before, intake = self.expected("motor_temp", None), \
            self.expected("intake_temp", None)
        before_hz, self.reference_hz = self.reference_hz, sum(frequencies) / len(frequencies)
        low, high = inside
        if (low is None or self.reference_hz >= low) and (high is None or
                                                           self.reference_hz <= high):
            band = self.hz_band or Band(self.reference_hz, self.reference_hz)
            self.hz_band = Band(min(band.low, self.reference_hz),
                                max(band.high, self.reference_hz))
        self.pip_before = self.expected("pip", None)
        for metric, level in self.levels.items():
            values = [r[metric] for r in recent if metric in r]
            if not values:
                continue
            level.mean = statistics.median(values)  # one spike among them moves nothing
        current_after = self.expected("motor_current", self.reference_hz)
        if temp_before is not None and current_before and current_after and before_hz:
            # Losses ∝ I²; more flow past the motor cools it better (∝ velocity^0.8).
            rise = temp_before - intake if intake is not None else TYPICAL_RISE_DEGC
            heating = (current_after / current_before) ** 2 * \
                (before_hz / self.reference_hz) ** 0.8
            level = self.levels["motor_temp"]
            now = level.mean
            level.mean = max(now, temp_before + max(0.0, rise) * (heating - 1))
            self.temp_on_its_way = Heading(now, level.mean)
