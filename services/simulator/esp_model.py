"""A plausible electric submersible pump: normal operation with noise and daily drift,
plus fault scenarios that develop over time (what the diagnostics service must find)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

FAULTS = ("gas_lock", "pump_off", "broken_shaft", "closed_valve", "overload", "overheating",
          "bearing_wear", "sensor_flatline")

# Nominal operating point of a mid-size ESP (units in the metric objects sent).
UNITS = {
    "flow_rate": "bbl/d", "pip": "psi", "discharge_pressure": "psi", "wellhead_pressure": "psi",
    "motor_current": "A", "motor_voltage": "V", "motor_temp": "degF", "intake_temp": "degF",
    "vibration": "g", "vsd_frequency": "Hz", "gor": "scf/bbl", "power": "kW",
}


@dataclass
class EspModel:
    """One pump. `sample(t)` gives its readings at `t` seconds since the simulation began."""

    device_id: str
    fault: str | None = None
    fault_onset: float = 120.0     # seconds after start when the fault begins to develop
    fault_ramp: float = 600.0      # seconds for the fault to reach full effect
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose from {', '.join(FAULTS)}")
        # Each well is a little different.
        self.size = self.rng.uniform(0.7, 1.3)
        self.phase = self.rng.uniform(0, 2 * math.pi)
        self._flat_pip: float | None = None

    def severity(self, t: float) -> float:
        """0 before onset, ramping to 1 over fault_ramp."""
        if self.fault is None or t < self.fault_onset:
            return 0.0
        return min(1.0, (t - self.fault_onset) / self.fault_ramp)

    def sample(self, t: float) -> dict[str, float]:
        n = self.rng.gauss
        daily = math.sin(2 * math.pi * t / 86400 + self.phase)  # reservoir/ambient drift
        freq = 55.0 + 0.5 * daily
        flow = 2500 * self.size * (freq / 55) * (1 + 0.03 * daily)
        pip = 850 + 40 * daily
        discharge = 2800 + 60 * daily
        current = 45 * self.size * (freq / 55) ** 2
        motor_temp = 220 + 5 * daily
        vibration = 0.25
        gor = 600 + 30 * daily
        s, f = self.severity(t), self.fault
        if f == "gas_lock":
            flow *= 1 - 0.9 * s
            current *= 1 - 0.35 * s + 0.15 * s * math.sin(t / 7)  # erratic, low
            pip *= 1 + 0.2 * s
            gor *= 1 + 3 * s
            motor_temp += 40 * s
        elif f == "pump_off":
            pip *= 1 - 0.85 * s
            flow *= 1 - 0.8 * s
            current *= 1 - 0.3 * s
            motor_temp += 25 * s
        elif f == "broken_shaft":
            step = 1.0 if s > 0 else 0.0  # sudden, not gradual
            flow *= 1 - 0.98 * step
            current *= 1 - 0.6 * step
            discharge *= 1 - 0.35 * step
            pip *= 1 + 0.15 * step
        elif f == "closed_valve":
            discharge *= 1 + 0.45 * s
            flow *= 1 - 0.95 * s
            current *= 1 - 0.2 * s
            motor_temp += 35 * s
        elif f == "overload":
            current *= 1 + 0.45 * s
            motor_temp += 30 * s
        elif f == "overheating":
            motor_temp += 90 * s
        elif f == "bearing_wear":
            vibration += 1.6 * s ** 1.5
            current *= 1 + 0.08 * s
            motor_temp += 10 * s
        readings = {
            "flow_rate": max(0.0, flow + n(0, 25)),
            "pip": max(0.0, pip + n(0, 6)),
            "discharge_pressure": discharge + n(0, 12),
            "wellhead_pressure": 180 + 10 * daily + n(0, 2),
            "motor_current": max(0.0, current + n(0, 0.4)),
            "motor_voltage": 2300 + n(0, 8),
            "motor_temp": motor_temp + n(0, 0.8),
            "intake_temp": 180 + 3 * daily + n(0, 0.5),
            "vibration": max(0.0, vibration + abs(n(0, 0.03))),
            "vsd_frequency": freq + n(0, 0.05),
            "gor": max(0.0, gor + n(0, 10)),
        }
        readings["power"] = readings["motor_current"] * readings["motor_voltage"] * 1.732 \
            * 0.85 / 1000
        if f == "sensor_flatline" and s > 0:
            if self._flat_pip is None:
                self._flat_pip = round(readings["pip"], 1)
            readings["pip"] = self._flat_pip  # stuck transmitter: the exact same value
        return {k: round(v, 3) for k, v in readings.items()}
