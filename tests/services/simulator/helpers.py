"""Running a simulated well for a while, healthy or with a fault, and averaging it."""

from __future__ import annotations

import statistics

from services.simulator.esp_model import EspModel
from services.simulator.faults import FAULT_KINDS, FaultPlan, plan_fault
from services.simulator.operations import Operations
from services.simulator.well import WellSpec, design_well, well_rng, with_sensors

HOUR = 3600.0
ONSET = 2 * HOUR
RAMP = 2 * HOUR
STEP = 60.0


def well(device: str, seed: int = 1, fault: str | None = None) -> tuple[WellSpec,
                                                                       FaultPlan | None]:
    spec = design_well(device, seed)
    if fault is None:
        return spec, None
    spec = with_sensors(spec, FAULT_KINDS[fault].requires)
    return spec, plan_fault(fault, spec, ONSET, RAMP, well_rng(seed, device, "fault"))


def run(spec: WellSpec, plan: FaultPlan | None, hours: float,
        ops: Operations | None = None, step: float = STEP) -> list[dict[str, float]]:
    """True values every `step` seconds from 0 to `hours`."""
    model = EspModel(spec, plan, ops, well_rng(1, spec.device_id, "process"))
    return [model.step(k * step) for k in range(int(hours * HOUR / step))]


def developed_hours(plan: FaultPlan | None) -> float:
    return (plan.developed if plan else ONSET + RAMP) / HOUR


def window_mean(series: list[dict[str, float]], metric: str, start_h: float,
                end_h: float, step: float = STEP) -> float:
    lo, hi = int(start_h * HOUR / step), int(end_h * HOUR / step)
    return statistics.fmean(r[metric] for r in series[lo:hi])
