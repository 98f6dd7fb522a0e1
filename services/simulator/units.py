"""Units: the canonical unit of every metric (DESIGN §9), the linear conversions the
simulator publishes in, and the unit systems a well's controller may use.

The model computes in canonical units; a well converts on the way out, exactly as a
field RTU configured in kPa or degF would. Every conversion is linear
(canonical = value * factor + offset), so one small table covers them all. It is written
out here rather than taken from shared/units.py on purpose: a device's arithmetic is
its own, and the tests check that the ingest's conversions agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.units import CANONICAL

# Every metric a simulated ESP controller can publish, in the contract's canonical unit.
METRICS: tuple[str, ...] = tuple(CANONICAL)
PRESSURES = ("pip", "discharge_pressure", "wellhead_pressure")
TEMPERATURES = ("motor_temp", "intake_temp")


@dataclass(frozen=True)
class Conversion:
    """canonical = value * factor + offset; `resolution` is what a transmitter reports."""

    factor: float
    offset: float
    resolution: float


# (canonical unit, unit) -> conversion. Spellings are those the ingest accepts (DESIGN §9).
CONVERSIONS: dict[tuple[str, str], Conversion] = {
    ("bbl/d", "bbl/d"): Conversion(1.0, 0.0, 0.1),
    ("bbl/d", "m3/d"): Conversion(6.289811, 0.0, 0.01),        # 1 m3 = 6.2898 bbl
    ("psi", "psi"): Conversion(1.0, 0.0, 0.1),
    ("psi", "kPa"): Conversion(0.1450377, 0.0, 1.0),
    ("psi", "bar"): Conversion(14.50377, 0.0, 0.01),
    ("psi", "MPa"): Conversion(145.0377, 0.0, 0.001),
    ("A", "A"): Conversion(1.0, 0.0, 0.1),
    ("V", "V"): Conversion(1.0, 0.0, 1.0),
    ("V", "kV"): Conversion(1000.0, 0.0, 0.001),
    ("degC", "degC"): Conversion(1.0, 0.0, 0.1),
    ("degC", "degF"): Conversion(5 / 9, -32 * 5 / 9, 0.1),     # (F - 32) * 5/9
    ("degC", "K"): Conversion(1.0, -273.15, 0.1),
    ("mm/s", "mm/s"): Conversion(1.0, 0.0, 0.01),
    ("mm/s", "in/s"): Conversion(25.4, 0.0, 0.0001),
    ("Hz", "Hz"): Conversion(1.0, 0.0, 0.01),
    ("scf/bbl", "scf/bbl"): Conversion(1.0, 0.0, 1.0),
    ("scf/bbl", "m3/m3"): Conversion(5.614583, 0.0, 0.1),      # 1 m3/m3 = 5.6146 scf/bbl
    ("kW", "kW"): Conversion(1.0, 0.0, 0.1),
    ("kW", "hp"): Conversion(0.7456999, 0.0, 0.1),
}


def conversion(metric: str, unit: str) -> Conversion:
    try:
        return CONVERSIONS[(CANONICAL[metric], unit)]
    except KeyError:
        raise ValueError(f"no conversion for {metric} in {unit!r}") from None


def from_canonical(metric: str, value: float, unit: str) -> float:
    c = conversion(metric, unit)
    return (value - c.offset) / c.factor


def to_canonical(metric: str, value: float, unit: str) -> float:
    c = conversion(metric, unit)
    return value * c.factor + c.offset


def quantize(metric: str, value: float, unit: str) -> float:
    """Round to the transmitter's resolution in the unit it reports."""
    step = conversion(metric, unit).resolution
    digits = max(0, -int(f"{step:e}".split("e")[1]))
    return round(round(value / step) * step, digits)


# Unit systems a controller may be configured in; "mixed" is drawn per metric (§ well.py).
FIELD: dict[str, str] = {
    **CANONICAL, "motor_temp": "degF", "intake_temp": "degF", "vibration": "in/s",
    "power": "hp",
}
METRIC: dict[str, str] = {
    **CANONICAL, "flow_rate": "m3/d", "pip": "kPa", "discharge_pressure": "kPa",
    "wellhead_pressure": "kPa", "gor": "m3/m3",
}
METRIC_BAR: dict[str, str] = {**METRIC, "pip": "bar", "discharge_pressure": "bar",
                              "wellhead_pressure": "bar", "motor_voltage": "kV"}
UNIT_SYSTEMS: dict[str, dict[str, str]] = {
    "canonical": dict(CANONICAL), "field": FIELD, "metric": METRIC, "metric_bar": METRIC_BAR,
}


def units_for(metric: str) -> list[str]:
    """Every unit this metric can be published in."""
    return [u for (canon, u) in CONVERSIONS if canon == CANONICAL[metric]]
