"""`insa bench diagnose-eval`: how well the diagnosis engine finds faults on fleets drawn
from seeds, scored as the held-out fleets are: per fault, detected with its code (at its
labelled severity) within 30 readings of the signature having developed, and how
late; per healthy well, whether it got any warning or critical diagnosis.

Two kinds of fleet. `random` (the default, devtools/bench/random_wells.py): per seed 200
wells of a model the engine was not built on, drawn wide, each sampled every 1 to 60 s,
half of them faulty. `simulator`: per seed one fleet of the project's own simulator per
sampling interval (every 5, 15, 30 and 60 s by default), two wells per fault and ten
healthy. About 1,500 readings a well either way. Tune on some seeds, report on others.
"""

from __future__ import annotations

import statistics
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from devtools.bench import random_wells
from services.simulator.faults import FAULTS
from services.simulator.scenario_file import FleetConfig, generate
from shared.contract import INFO, SEVERITY_RANK
from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.offline import read_file

WITHIN_READINGS = 30
READINGS_PER_WELL = 1500
FAULTY_PER_CODE = 2
HEALTHY_WELLS = 10


RANDOM_WELLS = 200


@dataclass(frozen=True)
class EvalConfig:
    seeds: tuple[int, ...] = (101, 102, 103)
    intervals: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0)
    fleet: str = "random"


def fleet_config(seed: int, interval: float) -> FleetConfig:
    faulty = {f"W-{n + 1}": FAULTS[n % len(FAULTS)]
              for n in range(FAULTY_PER_CODE * len(FAULTS))}
    wells = len(faulty) + HEALTHY_WELLS
    return FleetConfig(wells=wells, hours=READINGS_PER_WELL * interval / 3600, interval=interval,
                       seed=seed * 1000 + int(interval), scenarios=faulty,
                       setpoint_steps=wells // 2, stops=wells // 3)


def _seconds(ts: object) -> float:
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def simulator_fleet(cfg: FleetConfig, workdir: Path) -> tuple[Path, Path, Path | None]:
    data, labels_path = workdir / "fleet.jsonl", workdir / "fleet.labels.jsonl"
    generate(cfg, data, labels_path)
    return data, labels_path, None


def score_fleet(data: Path, labels_path: Path, attributes_path: Path | None,
                name: str) -> dict[str, Any]:
    labels = {lab["device_id"]: lab for lab in map(orjson.loads,
                                                   labels_path.read_bytes().splitlines())}
    times: dict[str, list[float]] = defaultdict(list)
    alarms: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    engine = DiagnosisEngine()
    if attributes_path is not None:
        for device_id, device in orjson.loads(attributes_path.read_bytes()).items():
            engine.equipment[device_id] = device.get("attributes", {})
    for reading in read_file(data, lambda _n, _e: None):
        times[reading.device_id].append(reading.ts)
        for event in engine.process(reading):
            if not event.cleared and event.severity != INFO:
                alarms[event.device_id].append((event.ts, event.code, event.severity))
    faults: list[dict[str, Any]] = []
    healthy_false: list[dict[str, Any]] = []
    for device_id, label in labels.items():
        raised = alarms.get(device_id, [])
        if label["fault"] is None:
            if raised:
                healthy_false.append({"device_id": device_id, "codes": sorted(
                    {code for _, code, _ in raised}), "well": label.get("well", {})})
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
                       "before_onset": any(ts < onset for ts, _, _ in raised),
                       "interval_s": label.get("well", {}).get("interval_s")})
    return {"fleet": name, "faults": faults,
            "healthy_wells": sum(lab["fault"] is None for lab in labels.values()),
            "healthy_false": healthy_false}


def fleets(cfg: EvalConfig, workdir: Path) -> Iterator[tuple[str, tuple[Path, Path,
                                                                          Path | None]]]:
    for seed in cfg.seeds:
        if cfg.fleet == "random":
            yield f"random seed {seed}", random_wells.generate(
                seed, RANDOM_WELLS, READINGS_PER_WELL, workdir / "fleet.jsonl")
            continue
        for interval in cfg.intervals:
            yield f"seed {seed}, every {interval:g} s", simulator_fleet(
                fleet_config(seed, interval), workdir)


def run(cfg: EvalConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    scored = []
    with tempfile.TemporaryDirectory(prefix="insa-eval-") as tmp:
        for name, files in fleets(cfg, Path(tmp)):
            f = score_fleet(*files, name)
            scored.append(f)
            progress(f"  {name}: "
                     f"{sum(x['detected'] for x in f['faults'])}/{len(f['faults'])} "
                     f"faults, {len(f['healthy_false'])}/{f['healthy_wells']} healthy wells "
                     "with a false alarm")
    per_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in scored:
        for x in f["faults"]:
            per_fault[x["fault"]].append(x)
    summary = {code: {"wells": len(xs), "detected": sum(x["detected"] for x in xs),
                      "median_late_readings": statistics.median(
                          [x["late_readings"] for x in xs if x["detected"]] or [0]),
                      "wrong_first": sum(x["first_code"] not in (None, code) for x in xs),
                      "before_onset": sum(x["before_onset"] for x in xs)}
               for code, xs in sorted(per_fault.items())}
    healthy = sum(f["healthy_wells"] for f in scored)
    false = sum(len(f["healthy_false"]) for f in scored)
    false_codes = Counter(c for f in scored for x in f["healthy_false"] for c in x["codes"])
    return {"config": {"fleet": cfg.fleet, "seeds": cfg.seeds, "intervals": cfg.intervals},
            "per_fault": summary, "healthy_wells": healthy,
            "healthy_wells_false_alarm": false, "false_alarm_codes": dict(false_codes),
            "fleets": scored}


def report(result: dict[str, Any]) -> str:
    config = result["config"]
    every = "every 1-60 s" if config["fleet"] == "random" else \
        f"every {', '.join(f'{i:g}' for i in config['intervals'])} s"
    lines = [f"diagnosis on {config['fleet']} fleets, seeds "
             f"{', '.join(map(str, config['seeds']))}, readings {every}",
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
                 f"critical: {false}/{healthy} ({100 * false / max(healthy, 1):.0f} %)"
                 + "".join(f"; {code} {n}" for code, n in
                           sorted(result["false_alarm_codes"].items())))
    return "\n".join(lines)
