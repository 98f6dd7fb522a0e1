"""`insa simulate-file`: readings in the `insa diagnose` format, in time order,
deterministic for a seed, with labels that match the scenarios asked for."""

from __future__ import annotations

import csv
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.simulator.faults import FAULT_KINDS
from services.simulator.scenario_file import FleetConfig, generate
from services.simulator.units import CANONICAL, METRICS, to_canonical

CFG = FleetConfig(wells=6, hours=8, interval=120, seed=11,
                  scenarios={"W-2": "gas_lock", "W-5": "sensor_flatline"}, random_faults=2,
                  setpoint_steps=3, stops=2)


def load(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("fleet")
    n = generate(CFG, out / "r.jsonl", out / "r.labels.jsonl")
    readings, labels = load(out / "r.jsonl"), load(out / "r.labels.jsonl")
    assert n == len(readings)
    return readings, labels


def seconds(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def test_lines_are_diagnose_input_in_time_order(fleet: tuple[list, list]) -> None:  # type: ignore[type-arg]
    readings, _ = fleet
    assert all(set(r) == {"device_id", "ts", "telemetry"} for r in readings)
    times = [seconds(r["ts"]) for r in readings]
    assert times == sorted(times)
    assert times[0] >= CFG.start.timestamp() and times[-1] < CFG.start.timestamp() + 8 * 3600
    for device in CFG.device_ids():
        mine = [seconds(r["ts"]) for r in readings if r["device_id"] == device]
        assert len(mine) > 200 and all(b > a for a, b in itertools.pairwise(mine))
    # Units travel as value objects, with spellings from the canonical table's units.
    objects = [v for r in readings for v in r["telemetry"].values() if isinstance(v, dict)]
    assert objects and all(set(o) == {"value", "unit"} for o in objects)


def test_labels_match_the_scenarios(fleet: tuple[list, list]) -> None:  # type: ignore[type-arg]
    readings, labels = fleet
    by_well = {lab["device_id"]: lab for lab in labels}
    assert list(by_well) == CFG.device_ids()
    assert by_well["W-2"]["fault"] == "gas_lock"
    assert by_well["W-5"]["fault"] == "sensor_fault"   # the old name is an alias
    faulty = [lab for lab in labels if lab["fault"]]
    assert len(faulty) == 4
    for lab in faulty:
        kind = FAULT_KINDS[lab["fault"]]
        assert lab["min_severity"] == kind.min_severity
        onset, developed = seconds(lab["onset"]), seconds(lab["developed"])
        assert CFG.start.timestamp() < onset <= developed
        assert developed <= CFG.start.timestamp() + 0.86 * CFG.duration
        assert (onset == developed) == (kind.sudden or lab["fault_detail"].get("mode")
                                        == "jump")
    for lab in labels:
        if not lab["fault"]:
            assert lab["onset"] is None and lab["min_severity"] is None
        sent = {m for r in readings if r["device_id"] == lab["device_id"]
                for m in r["telemetry"]}
        assert sent <= set(lab["well"]["sensors"])   # a missing sensor is never sent
    kinds = [e["kind"] for lab in labels for e in lab["events"]]
    assert kinds.count("setpoint_step") + kinds.count("stop") >= 4


def test_a_stop_shows_in_the_readings(fleet: tuple[list, list]) -> None:  # type: ignore[type-arg]
    readings, labels = fleet
    stops = [(lab["device_id"], e) for lab in labels for e in lab["events"]
             if e["kind"] == "stop"]
    assert stops
    for device, stop in stops:
        inside = [r for r in readings if r["device_id"] == device
                  and seconds(stop["start"]) + 130 < seconds(r["ts"]) < seconds(stop["end"])]
        frequencies = [r["telemetry"].get("vsd_frequency") for r in inside]
        assert inside and all(f in (0, 0.0, None) or f == {"value": 0.0, "unit": "Hz"}
                              for f in frequencies)


def test_same_seed_same_bytes_other_seed_other_wells(tmp_path: Path) -> None:
    small = FleetConfig(wells=3, hours=2, interval=60, seed=4, random_faults=2, stops=1)
    for name in ("a", "b"):
        generate(small, tmp_path / f"{name}.jsonl", tmp_path / f"{name}.labels.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.labels.jsonl").read_bytes() == \
        (tmp_path / "b.labels.jsonl").read_bytes()
    other = FleetConfig(wells=3, hours=2, interval=60, seed=5, random_faults=2, stops=1)
    generate(other, tmp_path / "c.jsonl", tmp_path / "c.labels.jsonl")
    assert (tmp_path / "c.jsonl").read_bytes() != (tmp_path / "a.jsonl").read_bytes()


def test_csv_is_the_same_readings_in_canonical_units(tmp_path: Path) -> None:
    small = FleetConfig(wells=4, hours=1, interval=60, seed=8, glitches=False)
    generate(small, tmp_path / "r.jsonl", tmp_path / "r.labels.jsonl")
    generate(small, tmp_path / "r.csv", tmp_path / "c.labels.jsonl", fmt="csv")
    with (tmp_path / "r.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["device_id", "ts", *METRICS]
    readings = load(tmp_path / "r.jsonl")
    assert len(rows) == len(readings)
    units: dict[str, dict[str, str]] = {}
    for row, reading in zip(rows, readings, strict=True):
        assert (row["device_id"], row["ts"]) == (reading["device_id"], reading["ts"])
        known = units.setdefault(reading["device_id"], {})
        for metric in METRICS:
            value = reading["telemetry"].get(metric)
            if value is None:
                assert row[metric] == ""
                continue
            if isinstance(value, dict):
                known[metric] = value["unit"]
                value = value["value"]
            expected = to_canonical(metric, value, known.get(metric, CANONICAL[metric]))
            assert float(row[metric]) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "sub" / "fleet.jsonl"
    result = runner.invoke(main, ["simulate-file", str(out), "--wells", "3", "--hours", "1",
                                  "--interval", "300", "--seed", "2",
                                  "--scenario", "W-3=broken_shaft", "--stops", "1"])
    assert result.exit_code == 0, result.output
    labels = load(tmp_path / "sub" / "fleet.labels.jsonl")
    assert [lab["fault"] for lab in labels] == [None, None, "broken_shaft"]
    assert len(load(out)) == 3 * 12
    bad = runner.invoke(main, ["simulate-file", str(out), "--scenario", "W-9=gas_lock",
                               "--wells", "3"])
    assert bad.exit_code == 2 and "no such well" in bad.output
    bad = runner.invoke(main, ["simulate-file", str(out), "--scenario", "W-1=meltdown"])
    assert bad.exit_code == 2 and "unknown fault" in bad.output
