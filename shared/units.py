"""Canonical units of the ESP metrics (docs/payloads.md, "Units") and conversion into them.

Every known spelling of a unit converts by `value * scale + offset` (UNITS), so
converting costs a dict lookup on the ingest path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# metric -> canonical unit, as stored and as thresholds are written.
CANONICAL: dict[str, str] = {
    "flow_rate": "bbl/d",
    "pip": "psi",
    "discharge_pressure": "psi",
    "wellhead_pressure": "psi",
    "motor_current": "A",
    "motor_voltage": "V",
    "motor_temp": "degC",
    "intake_temp": "degC",
    "vibration": "mm/s",
    "vsd_frequency": "Hz",
    "gor": "scf/bbl",
    "power": "kW",
}

# What an ESP metric can physically read, in its canonical unit: a value outside is a
# fault of the transmitter or the bridge (a wrong scaling, 1e9), not a measurement, and
# the ingestor rejects its message (`implausible_value`) rather than storing it as the
# latest value and alerting on it. Generous on purpose (the largest ESPs, gauge
# pressures down to vacuum); `INSA_INGESTOR_PLAUSIBLE_BOUNDS` overrides them.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "flow_rate": (0.0, 100_000.0),
    "pip": (-15.0, 10_000.0),
    "discharge_pressure": (-15.0, 15_000.0),
    "wellhead_pressure": (-15.0, 10_000.0),
    "motor_current": (0.0, 1_000.0),
    "motor_voltage": (0.0, 10_000.0),
    "motor_temp": (-60.0, 400.0),
    "intake_temp": (-60.0, 350.0),
    "vibration": (0.0, 1_000.0),
    "vsd_frequency": (0.0, 200.0),
    "gor": (0.0, 1_000_000.0),
    "power": (0.0, 10_000.0),
}

# How devices spell units (compared case-insensitively, spaces removed) -> the canonical
# unit it converts into and how: canonical = value * scale + offset (every unit here is
# linear in its canonical one, offsets only for temperatures). Worked out with pint in
# Decimal arithmetic (exact to the last bit: 212 degF is 100.0 degC) and committed; the
# test beside it works them out again (tests/shared/test_units.py), so pint is a test's
# dependency, not a service's. Oil-field barrels are 42 US gallons.
UNITS: dict[str, tuple[str, float, float]] = {
    "bbl/d": ("bbl/d", 1.0, 0.0), "bpd": ("bbl/d", 1.0, 0.0),
    "bbl/day": ("bbl/d", 1.0, 0.0), "stb/d": ("bbl/d", 1.0, 0.0),
    "m3/d": ("bbl/d", 6.289810770432105, 0.0), "m³/d": ("bbl/d", 6.289810770432105, 0.0),
    "m3/day": ("bbl/d", 6.289810770432105, 0.0),
    "m3/h": ("bbl/d", 150.95545849037052, 0.0), "m³/h": ("bbl/d", 150.95545849037052, 0.0),
    "psi": ("psi", 1.0, 0.0), "psia": ("psi", 1.0, 0.0), "psig": ("psi", 1.0, 0.0),
    "kpa": ("psi", 0.14503773773020923, 0.0), "bar": ("psi", 14.50377377302092, 0.0),
    "mpa": ("psi", 145.03773773020922, 0.0), "pa": ("psi", 0.0001450377377302092, 0.0),
    "a": ("A", 1.0, 0.0), "amp": ("A", 1.0, 0.0), "amps": ("A", 1.0, 0.0),
    "v": ("V", 1.0, 0.0), "kv": ("V", 1000.0, 0.0),
    "degc": ("degC", 1.0, 0.0), "°c": ("degC", 1.0, 0.0), "c": ("degC", 1.0, 0.0),
    "celsius": ("degC", 1.0, 0.0),
    "degf": ("degC", 0.5555555555555556, -17.77777777777778),
    "°f": ("degC", 0.5555555555555556, -17.77777777777778),
    "f": ("degC", 0.5555555555555556, -17.77777777777778),
    "fahrenheit": ("degC", 0.5555555555555556, -17.77777777777778),
    "k": ("degC", 1.0, -273.15), "kelvin": ("degC", 1.0, -273.15),
    "mm/s": ("mm/s", 1.0, 0.0), "in/s": ("mm/s", 25.4, 0.0), "ips": ("mm/s", 25.4, 0.0),
    "hz": ("Hz", 1.0, 0.0),
    "scf/bbl": ("scf/bbl", 1.0, 0.0), "scf/stb": ("scf/bbl", 1.0, 0.0),
    "m3/m3": ("scf/bbl", 5.614583333333333, 0.0), "m³/m³": ("scf/bbl", 5.614583333333333, 0.0),
    "kw": ("kW", 1.0, 0.0), "w": ("kW", 0.001, 0.0), "hp": ("kW", 0.7456998715822702, 0.0),
    "mw": ("kW", 1000.0, 0.0),
}


class UnitError(ValueError):
    """A unit that cannot be converted to the metric's canonical unit."""


@dataclass(frozen=True, slots=True)
class Conversion:
    scale: float
    offset: float = 0.0

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset


IDENTITY = Conversion(1.0)


def normalize_spelling(unit: str) -> str:
    return unit.strip().replace(" ", "").lower()


@functools.lru_cache(maxsize=4096)
def conversion(metric: str, unit: str | None) -> Conversion:
    """How to bring `metric` given in `unit` to its canonical unit.

    A metric the contract does not know keeps its value (and unit) as sent; a unit
    that cannot express a known metric raises UnitError.
    """
    canonical = CANONICAL.get(metric)
    if canonical is None or unit is None:
        return IDENTITY
    spelled = normalize_spelling(unit)
    if spelled == normalize_spelling(canonical):
        return IDENTITY
    known = UNITS.get(spelled)
    if known is None:
        raise UnitError(f"unknown unit {unit!r} for {metric} (canonical {canonical})")
    target, scale, offset = known
    if target != canonical:
        raise UnitError(f"{unit!r} cannot express {metric} (canonical {canonical})")
    return Conversion(scale, offset)


def to_canonical(metric: str, value: float, unit: str | None) -> float:
    return conversion(metric, unit)(value)
