"""Unit conversions of published values: known factors, and every one round-trips."""

from __future__ import annotations

import pytest

from services.simulator.units import (
    CANONICAL,
    CONVERSIONS,
    METRICS,
    UNIT_SYSTEMS,
    from_canonical,
    quantize,
    to_canonical,
    units_for,
)

DIAGNOSE_SPELLINGS = {  # DESIGN §9: canonical and (at least) accepted units
    "flow_rate": {"bbl/d", "m3/d"}, "pip": {"psi", "kPa", "bar", "MPa"},
    "motor_current": {"A"}, "motor_voltage": {"V", "kV"},
    "motor_temp": {"degC", "degF", "K"}, "vibration": {"mm/s", "in/s"},
    "vsd_frequency": {"Hz"}, "gor": {"scf/bbl", "m3/m3"}, "power": {"kW", "hp"},
}


@pytest.mark.parametrize(("metric", "value", "unit", "canonical"), [
    ("motor_temp", 212.0, "degF", 100.0), ("motor_temp", 32.0, "degF", 0.0),
    ("intake_temp", 373.15, "K", 100.0), ("pip", 1.0, "bar", 14.50377),
    ("pip", 6894.757, "kPa", 1000.0), ("pip", 1.0, "MPa", 145.0377),
    ("flow_rate", 1.0, "m3/d", 6.289811), ("vibration", 1.0, "in/s", 25.4),
    ("power", 1.0, "hp", 0.7457), ("gor", 1.0, "m3/m3", 5.6146),
    ("motor_voltage", 2.3, "kV", 2300.0),
])
def test_known_conversions(metric: str, value: float, unit: str, canonical: float) -> None:
    assert to_canonical(metric, value, unit) == pytest.approx(canonical, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_every_unit_round_trips(metric: str) -> None:
    for unit in units_for(metric):
        for value in (0.0, 0.37, 55.0, 1234.5, -40.0):
            published = from_canonical(metric, value, unit)
            assert to_canonical(metric, published, unit) == pytest.approx(value, abs=1e-9)


def test_units_are_spellings_the_ingest_accepts() -> None:
    for metric in METRICS:
        accepted = DIAGNOSE_SPELLINGS.get(metric) or DIAGNOSE_SPELLINGS[
            {"discharge_pressure": "pip", "wellhead_pressure": "pip",
             "intake_temp": "motor_temp"}[metric]]
        assert set(units_for(metric)) <= accepted, metric
        assert CANONICAL[metric] in accepted
    for system in UNIT_SYSTEMS.values():
        assert set(system) == set(METRICS)
        assert all((CANONICAL[m], u) in CONVERSIONS for m, u in system.items())


def test_quantize_keeps_a_transmitters_resolution() -> None:
    assert quantize("pip", 850.04, "psi") == 850.0
    assert quantize("vibration", 0.0123456, "in/s") == 0.0123
    assert quantize("pip", 5861.4, "kPa") == 5861.0
    # Quantizing a published value and converting back stays within the resolution.
    published = quantize("motor_temp", from_canonical("motor_temp", 87.33, "degF"), "degF")
    assert abs(to_canonical("motor_temp", published, "degF") - 87.33) < 0.1
