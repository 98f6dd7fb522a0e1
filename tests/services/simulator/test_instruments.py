"""What a controller publishes: its sensors only, in its units, with units riding along
as its policy says; a failed transmitter sticks or rails while the rest move."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from services.simulator.esp_model import EspModel
from services.simulator.faults import FaultPlan
from services.simulator.instruments import NO_GLITCHES, GlitchRates, Instruments
from services.simulator.units import CANONICAL, METRICS, UNIT_SYSTEMS, to_canonical
from services.simulator.well import WellSpec, design_well

Series = list[tuple[dict[str, float] | None, dict[str, object] | None]]


def readings(spec: WellSpec, plan: FaultPlan | None = None,
             glitches: GlitchRates = NO_GLITCHES, n: int = 120,
             step: float = 60.0) -> tuple[Series, Instruments]:
    model = EspModel(spec, plan, rng=random.Random(1))
    inst = Instruments(spec, plan, random.Random(2), glitches)
    out: Series = []
    for k in range(n):
        values = inst.read(k * step, model.step(k * step))
        out.append((values, inst.telemetry(values) if values else None))
    return out, inst


def test_only_fitted_sensors_are_published_in_the_wells_units() -> None:
    spec = replace(design_well("W-1", 1), sensors=("pip", "motor_current", "vsd_frequency"),
                   units=UNIT_SYSTEMS["metric_bar"], unit_every=0)
    (first, telemetry), *rest = readings(spec)[0]
    assert first is not None and set(first) == {"pip", "motor_current", "vsd_frequency"}
    assert telemetry == {m: {"value": first[m], "unit": spec.units[m]} for m in first}
    # pip travels in bar: about a fifteenth of its psi value.
    truth = EspModel(spec, rng=random.Random(1)).step(0)["pip"]
    assert to_canonical("pip", first["pip"], "bar") == pytest.approx(truth, rel=0.02)
    # unit_every=0: only the first reading of each metric states its unit.
    assert all(not isinstance(v, dict) for _, t in rest for v in (t or {}).values())


@pytest.mark.parametrize("every", [1, 10])
def test_units_ride_along_every_n_readings(every: int) -> None:
    spec = replace(design_well("W-2", 1), units=UNIT_SYSTEMS["field"], unit_every=every)
    series, _ = readings(spec, n=30)
    with_units = [i for i, (_, t) in enumerate(series)
                  if t and isinstance(t["motor_current"], dict)]
    assert with_units == list(range(0, 30, every))


def test_a_canonical_well_may_never_state_units() -> None:
    spec = replace(design_well("W-3", 1), units=dict(CANONICAL), unit_every=0)
    series, _ = readings(spec, n=5)
    assert all(not isinstance(v, dict) for _, t in series for v in (t or {}).values())


@pytest.mark.parametrize(("mode", "value"), [("stuck", None), ("rail_high", 9999.0),
                                             ("negative", -50.0), ("rail_zero", 0.0)])
def test_a_failed_transmitter(mode: str, value: float | None) -> None:
    spec = replace(design_well("W-4", 1), sensors=METRICS)
    params: dict[str, float | str] = {"metric": "pip", "mode": mode}
    if value is not None:
        params["value"] = value
    plan = FaultPlan("sensor_fault", 3600, 0, params)
    series, _ = readings(spec, plan, n=120)
    after = [v for v, _ in series[61:]]
    pips = {v["pip"] for v in after if v}
    assert len(pips) == 1 and (value is None or pips == {value})
    assert len({v["motor_current"] for v in after if v}) > 5   # the rest goes on moving
    assert len({v["pip"] for v, _ in series[:60] if v}) > 5


def test_glitches_are_logged() -> None:
    spec = design_well("W-5", 1)
    series, inst = readings(spec, glitches=GlitchRates(spikes=40, gaps=10, drops=100),
                            n=1440)
    kinds = {g["kind"] for g in inst.log}
    assert kinds == {"spike", "gap"}
    gaps = sum(1 for v, _ in series if v is None)
    assert gaps > 0
    dropped = sum(1 for v, _ in series if v and len(v) < len(spec.sensors))
    assert dropped > 10
