"""Canonical units (docs/payloads.md) and conversion into them (shared/units.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.units import (
    CANONICAL,
    IDENTITY,
    UNITS,
    UnitError,
    conversion,
    normalize_spelling,
    to_canonical,
)


@pytest.mark.parametrize(("metric", "unit", "value", "canonical"), [
    ("motor_temp", "degF", 212.0, 100.0),
    ("intake_temp", "degF", 32.0, 0.0),
    ("motor_temp", "K", 373.15, 100.0),
    ("pip", "kPa", 100.0, 14.503773773020923),
    ("discharge_pressure", "bar", 1.0, 14.503773773020923),
    ("wellhead_pressure", "MPa", 1.0, 145.03773773020922),
    ("flow_rate", "m3/d", 1.0, 6.289810770432105),
    ("vibration", "in/s", 1.0, 25.4),
    ("power", "hp", 1.0, 0.7456998715822702),
    ("gor", "m3/m3", 1.0, 5.614583333333333),
    ("motor_voltage", "kV", 1.0, 1000.0),
])
def test_conversions_to_the_canonical_unit(metric: str, unit: str, value: float,
                                           canonical: float) -> None:
    assert to_canonical(metric, value, unit) == pytest.approx(canonical, rel=1e-12)


def test_100_degc_is_212_degf_both_ways() -> None:
    assert to_canonical("motor_temp", 100.0, "degC") == 100.0
    fahrenheit = conversion("motor_temp", "degF")
    assert fahrenheit(212.0) == 100.0  # exact: worked out in Decimal, not a few ulps off
    assert (100.0 - fahrenheit.offset) / fahrenheit.scale == pytest.approx(212.0, rel=1e-15)


def test_the_design_figures() -> None:
    assert to_canonical("flow_rate", 1.0, "m3/d") == pytest.approx(6.2898, abs=1e-4)
    assert to_canonical("gor", 1.0, "m3/m3") == pytest.approx(5.6146, abs=1e-4)
    assert to_canonical("pip", 6.894757, "kPa") == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("unit", "value", "canonical"), [
    ("°F", 212.0, 100.0), ("DEGF", 212.0, 100.0), ("deg F", 212.0, 100.0),
    ("°C", 50.0, 50.0), ("DEGC", 50.0, 50.0), (" degc ", 50.0, 50.0), ("kelvin", 0.0, -273.15),
])
def test_spellings(unit: str, value: float, canonical: float) -> None:
    assert to_canonical("motor_temp", value, unit) == pytest.approx(canonical, abs=1e-12)


def test_the_canonical_unit_and_none_are_the_identity() -> None:
    for metric, unit in CANONICAL.items():
        assert conversion(metric, unit) is IDENTITY
        assert conversion(metric, unit.upper()) is IDENTITY
        assert conversion(metric, None) is IDENTITY


def test_an_unknown_unit_is_refused() -> None:
    with pytest.raises(UnitError, match=r"unknown unit 'furlongs' for pip \(canonical psi\)"):
        conversion("pip", "furlongs")
    with pytest.raises(UnitError):
        conversion("motor_temp", "")


@pytest.mark.parametrize(("metric", "unit"), [
    ("pip", "degC"), ("motor_temp", "psi"), ("flow_rate", "kW"), ("vibration", "A"),
    ("gor", "bbl/d"), ("power", "Hz"),
])
def test_a_unit_of_the_wrong_dimension_is_refused(metric: str, unit: str) -> None:
    with pytest.raises(UnitError, match=f"'{unit}' cannot express {metric}"):
        conversion(metric, unit)


def test_an_unknown_metric_keeps_its_value_whatever_its_unit() -> None:
    assert conversion("torque", "furlongs") is IDENTITY
    assert to_canonical("torque", 12.5, "N*m") == 12.5
    assert to_canonical("casing_pressure", 300.0, "kPa") == 300.0


def test_conversions_are_cached() -> None:
    assert conversion("pip", "kPa") is conversion("pip", "kPa")


# How the committed table (shared/units.UNITS) names each spelling in pint.
PINT_NAMES = {
    "bbl/d": "oil_barrel/day", "bpd": "oil_barrel/day", "bbl/day": "oil_barrel/day",
    "stb/d": "oil_barrel/day", "m3/d": "meter**3/day", "m³/d": "meter**3/day",
    "m3/day": "meter**3/day", "m3/h": "meter**3/hour", "m³/h": "meter**3/hour",
    "psi": "psi", "psia": "psi", "psig": "psi", "kpa": "kilopascal", "bar": "bar",
    "mpa": "megapascal", "pa": "pascal", "a": "ampere", "amp": "ampere", "amps": "ampere",
    "v": "volt", "kv": "kilovolt", "degc": "degC", "°c": "degC", "c": "degC",
    "celsius": "degC", "degf": "degF", "°f": "degF", "f": "degF", "fahrenheit": "degF",
    "k": "kelvin", "kelvin": "kelvin", "mm/s": "millimeter/second",
    "in/s": "inch/second", "ips": "inch/second", "hz": "hertz",
    "scf/bbl": "foot**3/oil_barrel", "scf/stb": "foot**3/oil_barrel",
    "m3/m3": "meter**3/meter**3", "m³/m³": "meter**3/meter**3",
    "kw": "kilowatt", "w": "watt", "hp": "horsepower", "mw": "megawatt",
}


def test_the_committed_table_is_what_pint_works_out() -> None:
    """Every spelling converts into the canonical unit pint says, by pint's factors
    (in Decimal, so exactly), and no spelling pint could convert is missing."""
    pint = pytest.importorskip("pint")
    registry = pint.UnitRegistry(non_int_type=Decimal)
    assert set(PINT_NAMES) == set(UNITS)
    canonical = {u: PINT_NAMES[normalize_spelling(u)] for u in set(CANONICAL.values())}
    for spelled, (target, scale, offset) in UNITS.items():
        converts_to = []
        for unit, name in canonical.items():
            try:
                zero = registry.Quantity(Decimal(0), PINT_NAMES[spelled]).to(name).magnitude
                one = registry.Quantity(Decimal(1), PINT_NAMES[spelled]).to(name).magnitude
            except pint.DimensionalityError:
                continue
            converts_to.append((unit, float(one - zero), float(zero)))
        assert converts_to == [(target, scale, offset)], spelled
