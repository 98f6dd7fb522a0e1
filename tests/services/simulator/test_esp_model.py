"""The simulated pump behaves as a pump, and each injected fault shows its signature."""

from __future__ import annotations

import random
import statistics

import pytest

from services.simulator.esp_model import FAULTS, UNITS, EspModel


def mean_of(model: EspModel, metric: str, start: float, seconds: float = 60) -> float:
    return statistics.fmean(model.sample(start + t)[metric] for t in range(int(seconds)))


def pair(fault: str) -> tuple[EspModel, EspModel]:
    """A healthy pump and the same pump (same seed) with the fault fully developed at 700 s."""
    return (EspModel("ok", rng=random.Random(7)),
            EspModel("bad", fault=fault, fault_onset=100, fault_ramp=600, rng=random.Random(7)))


def test_normal_operation_is_plausible_and_complete() -> None:
    model = EspModel("esp-1", rng=random.Random(1))
    sample = model.sample(0)
    assert set(sample) == set(UNITS)
    assert 1500 < sample["flow_rate"] < 3600 and 700 < sample["pip"] < 1000
    assert 50 < sample["vsd_frequency"] < 60 and sample["vibration"] < 0.5
    assert model.sample(1) != model.sample(2)  # noisy, not constant


@pytest.mark.parametrize(("fault", "metric", "direction"), [
    ("gas_lock", "flow_rate", "down"), ("gas_lock", "gor", "up"),
    ("pump_off", "pip", "down"), ("broken_shaft", "motor_current", "down"),
    ("broken_shaft", "flow_rate", "down"), ("closed_valve", "discharge_pressure", "up"),
    ("closed_valve", "flow_rate", "down"), ("overload", "motor_current", "up"),
    ("overheating", "motor_temp", "up"), ("bearing_wear", "vibration", "up"),
])
def test_each_fault_moves_its_signature_metrics(fault: str, metric: str,
                                                direction: str) -> None:
    healthy, faulty = pair(fault)
    before = mean_of(faulty, metric, 0, 60)
    after, reference = mean_of(faulty, metric, 700), mean_of(healthy, metric, 700)
    assert abs(before - mean_of(healthy, metric, 0, 60)) < 0.05 * abs(before) + 0.05
    ratio = after / reference
    assert ratio < 0.8 if direction == "down" else ratio > 1.15, (fault, metric, ratio)


def test_sensor_flatline_repeats_the_exact_value() -> None:
    _, faulty = pair("sensor_flatline")
    values = {faulty.sample(t)["pip"] for t in range(200, 260)}
    assert len(values) == 1
    assert len({faulty.sample(t)["flow_rate"] for t in range(200, 260)}) > 1


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        EspModel("x", fault="meltdown")
    assert len(FAULTS) == 8
