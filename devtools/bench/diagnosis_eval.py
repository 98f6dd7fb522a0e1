"""`insa bench diagnose-eval`: how well the diagnosis engine finds faults on fleets drawn
from seeds, scored as the held-out fleets are: per fault, detected with its code (at its
labelled severity) within 30 readings of the signature having developed, and how
late; per healthy well, whether it got any warning or critical diagnosis.

Each seed gives one fleet per sampling interval (1 reading every 5, 15, 30 and 60 s by
default), each with two wells per fault, ten healthy wells, operators' setpoint steps,
planned stops, other unit systems, missing sensors, spikes and gaps, about 1,500
readings a well. Tune on some seeds, report on others (`--seeds`).
"""

from __future__ import annotations

import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from services.diagnostics.engine import DiagnosisEngine
from services.diagnostics.offline import read_file
from services.simulator.faults import FAULTS
from services.simulator.scenario_file import FleetConfig, generate
from shared.contract import SEVERITY_RANK

WITHIN_READINGS = 30
READINGS_PER_WELL = 1500
FAULTY_PER_CODE = 2
HEALTHY_WELLS = 10


@dataclass(frozen=True)
class EvalConfig:
    seeds: tuple[int, ...] = (101, 102, 103)
    intervals: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0)


def fleet_config(seed: int, interval: float) -> FleetConfig:
    faulty = {f"W-{n + 1}": FAULTS[n % len(FAULTS)]
              for n in range(FAULTY_PER_CODE * len(FAULTS))}
    wells = len(faulty) + HEALTHY_WELLS
    return FleetConfig(wells=wells, hours=READINGS_PER_WELL * interval / 3600, interval=interval,
                       seed=seed * 1000 + int(interval), scenarios=faulty,
                       setpoint_steps=wells // 2, stops=wells // 3)


def _seconds(ts: object) -> float:
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def score_fleet(cfg: FleetConfig, workdir: Path) -> dict[str, Any]:
    data, labels_path = workdir / "fleet.jsonl", workdir / "fleet.labels.jsonl"
    generate(cfg, data, labels_path)
    labels = {lab["device_id"]: lab for lab in map(orjson.loads,
                                                   labels_path.read_bytes().splitlines())}
    times: dict[str, list[float]] = defaultdict(list)
    alarms: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    engine = DiagnosisEngine()
    for reading in read_file(data, lambda _n, _e: None):
        times[reading.device_id].append(reading.ts)
        for event in engine.process(reading):
            if not event.cleared and event.severity != "info":
                alarms[event.device_id].append((event.ts, event.code, event.severity))
    faults: list[dict[str, Any]] = []
    healthy_false = 0
    for device_id, label in labels.items():
        raised = alarms.get(device_id, [])
        if label["fault"] is None:
            healthy_false += bool(raised)
            continue
        developed, onset = _seconds(label["developed"]), _seconds(label["onset"])
        wanted = SEVERITY_RANK[str(label["min_severity"])]
        found = next((ts for ts, code, severity in raised if code == label["fault"]
                      and SEVERITY_RANK[severity] >= wanted), None)
        late = None if found is None else \
            sum(developed < t <= found for t in times[device_id])
        first = raised[0][1] if raised else None
        faults.append({"device_id": device_id, "fault": label["fault"],
                       "detected": late is not None and late <= WITHIN_READINGS,
                       "late_readings": late, "first_code": first,
                       "before_onset": any(ts < onset for ts, _, _ in raised)})
    return {"interval": cfg.interval, "seed": cfg.seed, "faults": faults,
            "healthy_wells": HEALTHY_WELLS, "healthy_false": healthy_false}


def run(cfg: EvalConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    fleets = []
    with tempfile.TemporaryDirectory(prefix="insa-eval-") as tmp:
        for seed in cfg.seeds:
            for interval in cfg.intervals:
                fleets.append(score_fleet(fleet_config(seed, interval), Path(tmp)))
                f = fleets[-1]
                progress(f"  seed {seed}, every {interval:g} s: "
                         f"{sum(x['detected'] for x in f['faults'])}/{len(f['faults'])} "
                         f"faults, {f['healthy_false']}/{f['healthy_wells']} healthy wells "
                         "with a false alarm")
    per_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in fleets:
        for x in f["faults"]:
            per_fault[x["fault"]].append(x)
    summary = {code: {"wells": len(xs), "detected": sum(x["detected"] for x in xs),
                      "median_late_readings": statistics.median(
                          [x["late_readings"] for x in xs if x["detected"]] or [0]),
                      "wrong_first": sum(x["first_code"] not in (None, code) for x in xs),
                      "before_onset": sum(x["before_onset"] for x in xs)}
               for code, xs in sorted(per_fault.items())}
    healthy = sum(f["healthy_wells"] for f in fleets)
    false = sum(f["healthy_false"] for f in fleets)
    return {"config": {"seeds": cfg.seeds, "intervals": cfg.intervals}, "per_fault": summary,
            "healthy_wells": healthy, "healthy_wells_false_alarm": false, "fleets": fleets}


def report(result: dict[str, Any]) -> str:
    lines = [f"diagnosis on seeds {', '.join(map(str, result['config']['seeds']))}, "
             f"readings every {', '.join(f'{i:g}' for i in result['config']['intervals'])} s",
             f"  {'fault':<18} detected  median late  first diagnosis wrong  before onset"]
    detected = wells = 0
    for code, s in result["per_fault"].items():
        detected, wells = detected + s["detected"], wells + s["wells"]
        lines.append(f"  {code:<18} {s['detected']:>3}/{s['wells']:<4} "
                     f"{s['median_late_readings']:>8} rd  {s['wrong_first']:>10}"
                     f"{s['before_onset']:>18}")
    false, healthy = result["healthy_wells_false_alarm"], result["healthy_wells"]
    lines.append(f"  all faults: {detected}/{wells} ({100 * detected / max(wells, 1):.0f} %) "
                 f"within {WITHIN_READINGS} readings; healthy wells with a warning or "
                 f"critical: {false}/{healthy} ({100 * false / max(healthy, 1):.0f} %)")
    return "\n".join(lines)
