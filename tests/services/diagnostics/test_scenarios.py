"""The engine on the physical simulator's fleets, through `insa diagnose` as an engineer
runs it: every fault found with its code and severity soon after it has developed, and
a healthy fleet with operators' setpoint steps, planned stops, unusual operating points,
other unit systems, missing sensors, spikes and gaps raising no warning or critical."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from services.simulator.faults import FAULTS
from services.simulator.scenario_file import FleetConfig, generate
from shared.contract import SEVERITY_RANK as RANK

# A diagnosis must come within this many readings of its signature having developed.
WITHIN_READINGS = 30


@dataclass
class Fleet:
    readings: list[dict[str, object]]
    labels: dict[str, dict[str, object]]
    events: list[dict[str, object]]
    stderr: str


def diagnose(tmp_path: Path, cfg: FleetConfig, fmt: str = "jsonl") -> Fleet:
    data = tmp_path / f"fleet.{'csv' if fmt == 'csv' else 'jsonl'}"
    labels = tmp_path / "fleet.labels.jsonl"
    generate(cfg, data, labels, fmt)
    run = subprocess.run([sys.executable, "-m", "services.cli", "diagnose", str(data)],
                         capture_output=True, check=True, timeout=300)
    readings = [] if fmt == "csv" else [orjson.loads(line) for line in
                                        data.read_bytes().splitlines()]
    return Fleet(readings, {lab["device_id"]: lab for lab in
                            map(orjson.loads, labels.read_bytes().splitlines())},
                 [orjson.loads(line) for line in run.stdout.splitlines()],
                 run.stderr.decode())


def seconds(ts: object) -> float:
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def alarms(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events if e["severity"] != "info" and not e["cleared"]]


@pytest.mark.parametrize("seed", [21, 22])
def test_every_fault_is_diagnosed_soon_after_it_develops(tmp_path: Path, seed: int) -> None:
    wells = {f"W-{n}": fault for n, fault in enumerate(FAULTS, start=1)}
    fleet = diagnose(tmp_path, FleetConfig(wells=len(wells), hours=24, interval=60, seed=seed,
                                           scenarios=wells, setpoint_steps=5, stops=4))
    for device_id, fault in wells.items():
        label = fleet.labels[device_id]
        onset, developed = seconds(label["onset"]), seconds(label["developed"])
        raised = [e for e in alarms(fleet.events) if e["device_id"] == device_id]
        assert all(seconds(e["ts"]) >= onset for e in raised), f"{device_id}: before onset"
        found = [e for e in raised if e["code"] == fault and
                 RANK[str(e["severity"])] >= RANK[str(label["min_severity"])]]
        assert found, f"{device_id} {fault} ({label['min_severity']}) not found: " + \
            str([(e["code"], e["severity"]) for e in raised])
        late = [r for r in fleet.readings if r["device_id"] == device_id and
                developed < seconds(r["ts"]) <= seconds(found[0]["ts"])]
        assert len(late) <= WITHIN_READINGS, f"{device_id}: {len(late)} readings late"


@pytest.mark.parametrize(("seed", "fmt"), [(31, "jsonl"), (32, "csv")])
def test_a_healthy_fleet_raises_no_warning_or_critical(tmp_path: Path, seed: int,
                                                       fmt: str) -> None:
    fleet = diagnose(tmp_path, FleetConfig(wells=30, hours=24, interval=60, seed=seed,
                                           setpoint_steps=25, stops=15), fmt)
    assert all(label["fault"] is None for label in fleet.labels.values())
    assert alarms(fleet.events) == []
    assert "skipped" not in fleet.stderr


def test_a_bad_line_is_named_and_the_rest_is_diagnosed(tmp_path: Path) -> None:
    lines = [orjson.dumps({"device_id": "W-1", "ts": 1_790_000_000 + 60 * n,
                           "telemetry": {"motor_current": 40.0 + n % 3, "pip": 900 + n % 5,
                                         "vsd_frequency": 55.0}}) for n in range(40)]
    lines[3] = b'{"device_id": "W-1", "ts": '
    lines[7] = orjson.dumps({"device_id": "W-1", "ts": 1_790_000_420,
                             "telemetry": {"pip": {"value": 1, "unit": "furlong"}}})
    path = tmp_path / "readings.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    run = subprocess.run([sys.executable, "-m", "services.cli", "diagnose", str(path)],
                         capture_output=True, timeout=60)
    assert run.returncode == 0
    errors = run.stderr.decode()
    assert f"{path}:4: skipped" in errors and f"{path}:8: skipped" in errors
    assert "furlong" in errors and "2 line(s) skipped" in errors


@pytest.mark.parametrize("seed", [2, 5])
def test_one_standing_diagnosis_per_developing_failure(tmp_path: Path, seed: int) -> None:
    """Failures whose signatures overlap (gas lock unloads and heats the motor; an
    overheating motor draws current): a well never has two whole-well diagnoses standing
    at once (a VSD out of its range is a setting, apart), and one that replaces another
    clears it saying by what."""
    wells = {"W-1": "overheating", "W-2": "gas_lock", "W-3": "underload", "W-4": "overload"}
    fleet = diagnose(tmp_path, FleetConfig(wells=4, hours=6, interval=30, seed=seed,
                                           scenarios=wells))
    standing: dict[str, set[str]] = {d: set() for d in wells}
    superseded = []
    for event in fleet.events:
        if event.get("metric") is not None or event["code"] == "vsd_out_of_range":
            continue
        codes = standing[str(event["device_id"])]
        if event["cleared"]:
            codes.discard(str(event["code"]))
            evidence = event["evidence"]
            assert isinstance(evidence, dict)
            if "superseded_by" in evidence:
                superseded.append((event["code"], evidence["superseded_by"]))
        else:
            codes.add(str(event["code"]))
        assert len(codes) <= 1, f"{event['device_id']} at {event['ts']}: {sorted(codes)}"
    assert superseded, "these fleets supersede a diagnosis at least once"
