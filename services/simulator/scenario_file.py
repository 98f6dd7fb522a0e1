"""Offline scenario files (`insa simulate-file`): a fleet's readings as JSON lines in the
`insa diagnose` input format (DESIGN §9) or CSV in canonical units, with a ground-truth
labels file: each well's fault (or none), when it began and was fully developed, the
least severity a diagnosis should reach, and the healthy events a false alarm may be
blamed on (setpoint steps, stops, spikes, gaps).

Deterministic for a seed: every well draws from its own seeded streams.
"""

from __future__ import annotations

import csv
import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import orjson

from services.simulator.esp_model import EspModel
from services.simulator.faults import FAULT_KINDS, FAULTS, FaultPlan, canonical_fault, plan_fault
from services.simulator.instruments import NO_GLITCHES, GlitchRates, Instruments
from services.simulator.operations import Operations, Scheduler
from services.simulator.units import METRICS, to_canonical
from services.simulator.well import (
    WellSpec,
    design_well,
    well_attributes,
    well_rng,
    with_sensors,
)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
ONSET_SHARE = (0.15, 0.5)       # faults begin in this share of the run
DEVELOPED_BY_SHARE = 0.85       # ...and are fully developed before this share
EVENT_MARGIN = 3600.0           # s kept free of healthy events before a fault's onset


@dataclass(frozen=True)
class FleetConfig:
    wells: int = 10
    hours: float = 24.0
    interval: float = 60.0                 # s between readings of one well
    seed: int = 0
    scenarios: dict[str, str] = field(default_factory=dict)   # device id -> fault
    random_faults: int = 0                 # more wells, picked at random, get a fault
    setpoint_steps: int = 0                # across the fleet
    stops: int = 0                         # planned stops (and restarts), across the fleet
    glitches: bool = True
    start: datetime = DEFAULT_START
    prefix: str = "W-"

    @property
    def duration(self) -> float:
        return self.hours * 3600.0

    def device_ids(self) -> list[str]:
        return [f"{self.prefix}{n}" for n in range(1, self.wells + 1)]


@dataclass
class WellPlan:
    spec: WellSpec
    fault: FaultPlan | None
    ops: Operations
    phase: float                           # s: when in the interval this well reports


@dataclass(frozen=True)
class Record:
    t: float
    device_id: str
    values: dict[str, float]               # device units
    telemetry: dict[str, object]           # as published (unit objects where sent)


def assign_faults(cfg: FleetConfig) -> dict[str, str]:
    ids = cfg.device_ids()
    faults = {}
    for device, fault in cfg.scenarios.items():
        if device not in ids:
            raise ValueError(f"--scenario {device}={fault}: no such well "
                             f"({ids[0]} ... {ids[-1]})")
        faults[device] = canonical_fault(fault)
    rng = random.Random(f"{cfg.seed}:fleet:faults")
    free = [d for d in ids if d not in faults]
    chosen = rng.sample(free, min(cfg.random_faults, len(free)))
    codes: list[str] = []
    for device in chosen:  # as many different faults as there are wells to give them
        if not codes:
            codes = rng.sample(FAULTS, len(FAULTS))
        faults[device] = codes.pop()
    return faults


def plan_fleet(cfg: FleetConfig) -> list[WellPlan]:
    faults = assign_faults(cfg)
    specs, plans, schedulers = {}, {}, {}
    for device in cfg.device_ids():
        spec = design_well(device, cfg.seed)
        plan = None
        if device in faults:
            spec = with_sensors(spec, FAULT_KINDS[faults[device]].requires)
            plan = _timed_fault(cfg, spec, faults[device])
        specs[device], plans[device] = spec, plan
        busy = [(plan.onset - EVENT_MARGIN, cfg.duration)] if plan else []
        schedulers[device] = Scheduler(spec.setpoint_hz, cfg.duration, busy,
                                       well_rng(cfg.seed, device, "operations"))
    # Each healthy event goes to a random well that has room for it.
    rng = random.Random(f"{cfg.seed}:fleet:events")
    for count, add in ((cfg.stops, Scheduler.add_stop), (cfg.setpoint_steps,
                                                         Scheduler.add_step)):
        for _ in range(count):
            for device in rng.sample(list(schedulers), len(schedulers)):
                if add(schedulers[device]):
                    break
    return [WellPlan(specs[d], plans[d], schedulers[d].operations(),
                     float(int(well_rng(cfg.seed, d, "phase").uniform(0, cfg.interval))))
            for d in cfg.device_ids()]


def _timed_fault(cfg: FleetConfig, spec: WellSpec, code: str) -> FaultPlan:
    """A fault that begins in the run's first half and is fully developed (cause and the
    well's lag) by DEVELOPED_BY_SHARE of it: its ramp shortened, its onset brought
    forward, if the run is too short for the drawn ones."""
    rng = well_rng(cfg.seed, spec.device_id, "fault")
    onset = rng.uniform(*ONSET_SHARE) * cfg.duration
    ramp = 3600 * rng.uniform(*FAULT_KINDS[code].ramp_hours)
    plan = plan_fault(code, spec, onset, ramp, rng)
    limit = DEVELOPED_BY_SHARE * cfg.duration
    if plan.developed <= limit:
        return plan
    ramp = max(min(plan.ramp, limit - onset - plan.lag), min(plan.ramp, 0.1 * cfg.duration))
    onset = max(0.1 * cfg.duration, min(onset, limit - ramp - plan.lag))
    return replace(plan, onset=onset, ramp=ramp)


def _well_records(cfg: FleetConfig, plan: WellPlan,
                  instruments: Instruments) -> Iterator[Record]:
    device = plan.spec.device_id
    model = EspModel(plan.spec, plan.fault, plan.ops, well_rng(cfg.seed, device, "process"),
                     start=plan.phase)
    jitter = well_rng(cfg.seed, device, "clock")
    t = plan.phase
    while t < cfg.duration:
        # Controllers' clocks wander by a second or so; order within a well is kept.
        stamp = max(0.0, t + (jitter.choice((-1, 0, 0, 1)) if cfg.interval >= 10 else 0))
        values = instruments.read(stamp, model.step(stamp))
        if values:
            yield Record(stamp, device, values, instruments.telemetry(values))
        t += cfg.interval


def fleet_records(cfg: FleetConfig, plans: list[WellPlan],
                  instruments: dict[str, Instruments]) -> Iterator[Record]:
    """All wells' readings, interleaved in time order (ties by device id)."""
    streams = [_well_records(cfg, p, instruments[p.spec.device_id]) for p in plans]
    return heapq.merge(*streams, key=lambda r: (r.t, r.device_id))


def make_instruments(cfg: FleetConfig, plans: list[WellPlan]) -> dict[str, Instruments]:
    rates = GlitchRates() if cfg.glitches else NO_GLITCHES
    return {p.spec.device_id: Instruments(p.spec, p.fault,
                                          well_rng(cfg.seed, p.spec.device_id, "noise"), rates)
            for p in plans}


def timestamp(cfg: FleetConfig, t: float) -> str:
    return (cfg.start + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_jsonl(cfg: FleetConfig, records: Iterator[Record], out: IO[bytes]) -> int:
    n = 0
    for r in records:
        out.write(orjson.dumps({"device_id": r.device_id, "ts": timestamp(cfg, r.t),
                                "telemetry": r.telemetry}) + b"\n")
        n += 1
    return n


def canonical_values(spec: WellSpec, values: dict[str, float]) -> dict[str, float]:
    """Published values converted to canonical units (6 significant digits: the
    conversion must not lose what the transmitter resolved)."""
    return {metric: float(f"{to_canonical(metric, value, spec.units[metric]):.6g}")
            for metric, value in values.items()}


def write_csv(cfg: FleetConfig, plans: list[WellPlan], records: Iterator[Record],
              out: IO[str]) -> int:
    specs = {p.spec.device_id: p.spec for p in plans}
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["device_id", "ts", *METRICS])
    n = 0
    for r in records:
        canonical = canonical_values(specs[r.device_id], r.values)
        writer.writerow([r.device_id, timestamp(cfg, r.t),
                         *(canonical.get(m, "") for m in METRICS)])
        n += 1
    return n


def label_records(cfg: FleetConfig, plans: list[WellPlan],
                  instruments: dict[str, Instruments]) -> list[dict[str, object]]:
    labels: list[dict[str, object]] = []
    for p in plans:
        spec, fault = p.spec, p.fault
        events: list[dict[str, object]] = []
        for e in p.ops.events:
            event: dict[str, object] = {"kind": e.kind, "start": timestamp(cfg, e.start),
                                        "end": timestamp(cfg, e.end)}
            if e.kind == "setpoint_step":
                event |= {"from_hz": e.from_hz, "to_hz": e.to_hz}
            events.append(event)
        for g in instruments[spec.device_id].log:
            events.append({**g, "start": timestamp(cfg, float(g["start"])),
                           "end": timestamp(cfg, float(g["end"]))})
        events.sort(key=lambda e: str(e["start"]))
        labels.append({
            "device_id": spec.device_id,
            "fault": fault.code if fault else None,
            "onset": timestamp(cfg, fault.onset) if fault else None,
            "developed": timestamp(cfg, fault.developed) if fault else None,
            "min_severity": fault.kind.min_severity if fault else None,
            "fault_detail": fault.params if fault else {},
            "events": events,
            "well": {"unit_system": spec.unit_system, "units": spec.units,
                     "sensors": list(spec.sensors), "setpoint_hz": spec.setpoint_hz,
                     "rated_current_a": spec.motor.rated_current,
                     "rated_voltage_v": spec.motor.rated_voltage,
                     "design_rate_bpd": round(spec.design["rate"], 1),
                     "design_pip_psi": round(spec.design["pip"], 1),
                     "pump_stages": spec.pump.stages,
                     "pump_depth_ft": round(spec.system.depth),
                     "reservoir_pressure_psi": round(spec.reservoir.pressure, 1),
                     "productivity_index": round(spec.reservoir.pi, 3)},
        })
    return labels


def generate(cfg: FleetConfig, output: Path, labels_path: Path, fmt: str = "jsonl",
             attributes_path: Path | None = None) -> int:
    """Write the readings, the labels and (to `attributes_path`) each well's equipment as
    `insa rules backtest --attributes` takes it; returns the number of readings."""
    plans = plan_fleet(cfg)
    for path in (output, labels_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    if attributes_path is not None:
        attributes_path.write_bytes(orjson.dumps(
            {p.spec.device_id: {"device_type": "esp", "attributes": well_attributes(p.spec)}
             for p in plans}, option=orjson.OPT_INDENT_2))
    instruments = make_instruments(cfg, plans)
    records = fleet_records(cfg, plans, instruments)
    if fmt == "csv":
        with output.open("w", newline="") as text:
            n = write_csv(cfg, plans, records, text)
    else:
        with output.open("wb") as binary:
            n = write_jsonl(cfg, records, binary)
    with labels_path.open("wb") as out:
        for label in label_records(cfg, plans, instruments):
            out.write(orjson.dumps(label) + b"\n")
    return n
