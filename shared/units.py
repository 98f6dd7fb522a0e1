"""Canonical units of the ESP metrics (docs/payloads.md, "Units") and conversion into them.

Conversions are worked out once, for every known metric in every known spelling, with
pint and then applied as `value * scale + offset` (every unit here is linear in its
canonical one, offsets only for temperatures), so converting costs a dict lookup on
the ingest path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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

# How devices spell units (compared case-insensitively, spaces removed) -> pint's name.
# Oil-field barrels are 42 US gallons: pint's plain "barrel" is a different one.
_SPELLINGS: dict[str, str] = {
    "bbl/d": "oil_barrel/day", "bpd": "oil_barrel/day", "bbl/day": "oil_barrel/day",
    "stb/d": "oil_barrel/day", "m3/d": "meter**3/day", "m³/d": "meter**3/day",
    "m3/day": "meter**3/day", "m3/h": "meter**3/hour", "m³/h": "meter**3/hour",
    "psi": "psi", "psia": "psi", "psig": "psi", "kpa": "kilopascal", "bar": "bar",
    "mpa": "megapascal", "pa": "pascal",
    "a": "ampere", "amp": "ampere", "amps": "ampere",
    "v": "volt", "kv": "kilovolt",
    "degc": "degC", "°c": "degC", "c": "degC", "celsius": "degC",
    "degf": "degF", "°f": "degF", "f": "degF", "fahrenheit": "degF", "k": "kelvin",
    "kelvin": "kelvin",
    "mm/s": "millimeter/second", "in/s": "inch/second", "ips": "inch/second",
    "hz": "hertz",
    "scf/bbl": "foot**3/oil_barrel", "scf/stb": "foot**3/oil_barrel",
    "m3/m3": "meter**3/meter**3", "m³/m³": "meter**3/meter**3",
    "kw": "kilowatt", "w": "watt", "hp": "horsepower", "mw": "megawatt",
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


@functools.cache
def _table() -> dict[tuple[str, str], Conversion | None]:
    """Every known metric in every known spelling → its conversion, or None where the unit
    cannot express the metric. Worked out once with pint, which is then let go: its
    registry is tens of thousands of objects the garbage collector would otherwise walk
    for as long as the process lives."""
    import pint  # imported on first use: it takes a moment and most paths never need it

    # Decimal arithmetic: with floats pint's offset units come out a few ulps off
    # (212 degF -> 99.99999999999736 degC).
    registry: Any = pint.UnitRegistry(non_int_type=Decimal)  # pint is loosely typed
    table: dict[tuple[str, str], Conversion | None] = {}
    for metric, canonical in CANONICAL.items():
        target = _SPELLINGS[normalize_spelling(canonical)]
        for spelled, source in _SPELLINGS.items():
            try:
                zero = registry.Quantity(Decimal(0), source).to(target).magnitude
                one = registry.Quantity(Decimal(1), source).to(target).magnitude
            except Exception:  # pint's DimensionalityError and friends
                table[(metric, spelled)] = None
                continue
            table[(metric, spelled)] = Conversion(float(one - zero), float(zero))
    return table


def warm_up() -> None:
    """Work every conversion out now (about 0.3 s), not on the first reading with a unit:
    a service calls this at start, before it takes traffic."""
    _table()


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
    if spelled not in _SPELLINGS:
        raise UnitError(f"unknown unit {unit!r} for {metric} (canonical {canonical})")
    found = _table()[(metric, spelled)]
    if found is None:
        raise UnitError(f"{unit!r} cannot express {metric} (canonical {canonical})")
    return found


def to_canonical(metric: str, value: float, unit: str | None) -> float:
    return conversion(metric, unit)(value)
