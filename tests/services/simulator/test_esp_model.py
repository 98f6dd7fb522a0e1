"""The simulated well behaves as an ESP well: pump curve and affinity laws, wells of
different sizes at different operating points, operations events, and each fault moving
its signature metrics the physically right way against the same well healthy."""

from __future__ import annotations

import math
import statistics
from functools import cache

import pytest

from services.simulator.faults import FAULTS, canonical_fault, plan_fault
from services.simulator.hydraulics import PumpCurve
from services.simulator.operations import Event, Operations
from services.simulator.units import METRICS
from services.simulator.well import design_well, well_rng
from tests.services.simulator.helpers import (
    ONSET,
    developed_hours,
    run,
    well,
    window_mean,
)

WELLS = ("W-1", "W-2", "W-3")
WINDOW_H = 2.0   # compare the two hours after the fault is fully developed


@cache
def healthy(device: str, hours: int = 8) -> list[dict[str, float]]:
    spec, _ = well(device)
    return run(spec, None, hours)


@cache
def faulty_run(device: str, fault: str) -> tuple[list[dict[str, float]], float]:
    spec, plan = well(device, fault=fault)
    developed = developed_hours(plan)
    return run(spec, plan, developed + WINDOW_H), developed


def faulty(device: str, fault: str) -> list[dict[str, float]]:
    return faulty_run(device, fault)[0]


def ratio(device: str, fault: str, metric: str) -> float:
    """Fault-developed mean over the same well's healthy mean, same hours."""
    series, developed = faulty_run(device, fault)
    end = developed + WINDOW_H
    after = window_mean(series, metric, developed, end)
    before = window_mean(healthy(device, math.ceil(end)), metric, developed, end)
    return after / before


# --- pump and affinity laws -----------------------------------------------------------

def test_affinity_laws_of_the_pump_curve() -> None:
    pump = PumpCurve(stages=100, stage_head0=40, q_max=4000, q_bep=2500,
                     bep_efficiency=0.6, shutin_power_fraction=0.45)
    for r in (50 / 60, 55 / 60, 62 / 60):
        # Corresponding points: Q ~ r, H ~ r^2, shaft power ~ r^3.
        assert pump.head(1500 * r, r) == pytest.approx(pump.head(1500, 1.0) * r ** 2)
        assert pump.shaft_power(1500 * r, r, 0.45) == pytest.approx(
            pump.shaft_power(1500, 1.0, 0.45) * r ** 3)
    assert pump.head(0, 1.0) == pytest.approx(100 * 40)        # shut-in head
    assert pump.head(4000, 1.0) == 0.0                          # open flow
    assert pump.head(2000, 1.0) > pump.head(3000, 1.0)          # head falls with flow


def test_frequency_raises_flow_and_power_in_a_well() -> None:
    spec = design_well("W-4", 1)
    results = {}
    for hz in (48.0, 54.0, 60.0):
        series = run(spec, None, 3, Operations(hz))  # the annulus settles in the first hours
        results[hz] = {m: window_mean(series, m, 2, 3) for m in METRICS}
    flows = [results[hz]["flow_rate"] for hz in (48.0, 54.0, 60.0)]
    powers = [results[hz]["power"] for hz in (48.0, 54.0, 60.0)]
    assert flows == sorted(flows) and flows[2] > 1.1 * flows[0]
    assert powers == sorted(powers)
    # The pump's pressure rise at the operating point grows about as f^2 (less, since
    # it also moves more fluid): between the f and f^2 ratios.
    rise = {hz: results[hz]["discharge_pressure"] - results[hz]["pip"] for hz in results}
    assert 60 / 48 < rise[60.0] / rise[48.0] * (60 / 48) < (60 / 48) ** 3
    assert results[60.0]["pip"] < results[48.0]["pip"]    # more drawdown


def test_healthy_wells_differ_and_are_plausible() -> None:
    flows, currents = [], []
    for n in range(1, 13):
        spec = design_well(f"W-{n}", 7)
        last = run(spec, None, 1, step=300)[-1]
        flows.append(last["flow_rate"])
        currents.append(last["motor_current"])
        assert 300 < last["flow_rate"] < 6000
        assert 0 < last["pip"] < spec.reservoir.pressure
        assert last["discharge_pressure"] > last["pip"] + 500
        assert 0.25 < last["motor_current"] / spec.motor.rated_current < 1.0
        assert last["motor_temp"] > last["intake_temp"] + 3 and last["motor_temp"] < 150
        assert 0.1 < last["vibration"] < 1.5
        assert last["vsd_frequency"] == spec.setpoint_hz
        assert 45 <= spec.setpoint_hz <= 62 and 20 <= spec.motor.rated_current <= 130
    assert max(flows) > 2.5 * min(flows) and max(currents) > 1.5 * min(currents)


def test_a_stop_and_restart() -> None:
    spec = design_well("W-5", 1)
    ops = Operations(spec.setpoint_hz, (Event("stop", 3600, 7200),))
    # While stopped the annulus fills: PIP builds toward reservoir pressure.
    series = run(spec, None, 3, ops)
    before, stopped = series[int(3500 / 60)], series[int(7100 / 60)]
    assert stopped["flow_rate"] == 0 and stopped["motor_current"] == 0
    assert stopped["vsd_frequency"] == 0
    assert stopped["pip"] > before["pip"] + 0.3 * (spec.reservoir.pressure - before["pip"])
    assert stopped["motor_temp"] < before["motor_temp"]
    # Starting: current several times nameplate for a reading, frequency ramping up.
    start = series[int(7200 / 60)]
    assert start["motor_current"] > 2 * spec.motor.rated_current
    assert 0 < start["vsd_frequency"] <= spec.setpoint_hz
    assert series[-1]["vsd_frequency"] == spec.setpoint_hz


def test_setpoint_step_is_followed() -> None:
    spec = design_well("W-6", 1)
    new = spec.setpoint_hz - 4
    ops = Operations(spec.setpoint_hz, (Event("setpoint_step", 3600, 3600,
                                              spec.setpoint_hz, new),))
    series = run(spec, None, 2, ops)
    assert series[-1]["vsd_frequency"] == new
    assert series[-1]["flow_rate"] < series[50]["flow_rate"]


# --- faults ---------------------------------------------------------------------------

# (fault, metric, direction, factor): the developed mean moves past healthy * factor.
SIGNATURES = [
    ("gas_lock", "flow_rate", "down", 0.7), ("gas_lock", "motor_current", "down", 0.85),
    ("gas_lock", "pip", "up", 1.0), ("gas_lock", "gor", "up", 1.5),
    ("gas_lock", "motor_temp", "up", 1.05),
    ("pump_off", "pip", "down", 0.75), ("pump_off", "flow_rate", "down", 0.8),
    ("pump_off", "motor_current", "down", 0.95),
    ("broken_shaft", "motor_current", "down", 0.7), ("broken_shaft", "flow_rate", "down", 0.01),
    ("broken_shaft", "pip", "up", 1.0), ("broken_shaft", "discharge_pressure", "down", 0.9),
    ("closed_valve", "wellhead_pressure", "up", 1.5),
    ("closed_valve", "discharge_pressure", "up", 1.1),
    ("closed_valve", "flow_rate", "down", 0.5), ("closed_valve", "motor_current", "down", 0.95),
    ("closed_valve", "motor_temp", "up", 1.03),
    ("overload", "motor_current", "up", 1.15), ("overload", "motor_temp", "up", 1.02),
    ("underload", "motor_current", "down", 0.8), ("underload", "flow_rate", "down", 0.85),
    ("underload", "pip", "up", 0.99),
    ("overheating", "motor_temp", "up", 1.2),
    ("bearing_wear", "vibration", "up", 2.5), ("bearing_wear", "motor_current", "up", 1.005),
]


@pytest.mark.parametrize("device", WELLS)
@pytest.mark.parametrize(("fault", "metric", "direction", "factor"), SIGNATURES)
def test_each_fault_moves_its_signature(device: str, fault: str, metric: str,
                                        direction: str, factor: float) -> None:
    r = ratio(device, fault, metric)
    assert (r < factor if direction == "down" else r > factor), (device, fault, metric, r)


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "sensor_fault"])
def test_a_fault_changes_nothing_before_its_onset(fault: str) -> None:
    before = int(ONSET / 60) - 1
    assert faulty("W-1", fault)[:before] == healthy("W-1")[:before]


@pytest.mark.parametrize("device", WELLS)
def test_signatures_that_are_not_just_means(device: str) -> None:
    # Overheating: far hotter with the current about normal.
    assert 0.85 < ratio(device, "overheating", "motor_current") < 1.25
    # Gas lock: the current is erratic, not just low.
    series, developed = faulty_run(device, "gas_lock")
    hours = slice(int(developed * 60), len(series))
    spread = statistics.pstdev(r["motor_current"] for r in series[hours])
    calm = statistics.pstdev(r["motor_current"]
                             for r in healthy(device, math.ceil(developed + WINDOW_H))[hours])
    assert spread > 3 * calm
    # Broken shaft: no load left, only the magnetizing current.
    spec, _ = well(device)
    current = window_mean(faulty(device, "broken_shaft"), "motor_current", 3, 4)
    assert current < 1.2 * spec.motor.magnetizing_current
    # Drive fault: beyond 45-65 Hz.
    freq = faulty(device, "vsd_out_of_range")[-1]["vsd_frequency"]
    assert not 45 <= freq <= 65


def test_broken_shaft_is_sudden() -> None:
    series = faulty("W-2", "broken_shaft")
    at = int(ONSET / 60)
    assert series[at]["flow_rate"] == 0 and series[at - 1]["flow_rate"] > 0


def test_fault_names() -> None:
    assert len(FAULTS) == 10
    assert canonical_fault("sensor_flatline") == "sensor_fault"
    with pytest.raises(ValueError, match="unknown fault"):
        canonical_fault("meltdown")


def test_fault_instances_vary() -> None:
    spec = design_well("W-1", 1)
    drawn = {str(plan_fault("overload", spec, 0, 600, well_rng(s, "W-1", "fault")).params)
             for s in range(6)}
    assert len(drawn) == 6
