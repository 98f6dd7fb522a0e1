"""`insa rules backtest FILE`: readings from a file through the diagnosis engine and the
alert engine, in event time, every alert transition out as a JSON line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from services.simulator.scenario_file import FleetConfig, generate


def backtest(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "services.cli", "rules", "backtest",
                           *map(str, args)], capture_output=True, timeout=300)


def test_a_fault_becomes_an_alert_from_its_diagnosis(tmp_path: Path) -> None:
    data = tmp_path / "fleet.jsonl"
    generate(FleetConfig(wells=2, hours=6, interval=30, seed=3,
                         scenarios={"W-1": "closed_valve"}), data,
             tmp_path / "fleet.labels.jsonl", "jsonl")
    run = backtest(data)
    assert run.returncode == 0, run.stderr.decode()
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert lines and {"device_id", "ts", "rule", "severity", "state"} <= set(lines[0])
    fired = [e for e in lines if e["event"] == "firing" and e["rule"].startswith(
        "ESP diagnosis:")]
    assert {(e["device_id"], e["rule"]) for e in fired} == {
        ("W-1", "ESP diagnosis: closed_valve")}
    times = [e["ts"] for e in lines]
    assert times == sorted(times)  # event time, oldest first
    assert b"replaying" in run.stderr  # the progress bar


def test_own_rules_and_device_scopes(tmp_path: Path) -> None:
    data = tmp_path / "readings.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        {"device_id": "W-1", "ts": "2026-11-01T00:00:00Z", "motor_temp": 90},
        {"device_id": "W-2", "ts": "2026-11-01T00:00:00Z", "motor_temp": 130},
        {"device_id": "W-1", "ts": "2026-11-01T00:01:00Z", "motor_temp": 125},
        {"device_id": "W-1", "ts": "2026-11-01T00:02:00Z", "motor_temp": {"value": 200,
                                                                          "unit": "degF"}},
    ]))
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps([{"type": "threshold", "name": "hot", "metric": "motor_temp",
                                     "op": ">", "value": 120, "scope": {"tag": "north"}}]))
    devices = tmp_path / "devices.json"
    devices.write_bytes(orjson.dumps({"W-1": {"tags": ["north"]}, "W-2": {"tags": ["south"]}}))
    run = backtest(data, "--rules", rules, "--attributes", devices)
    assert run.returncode == 0, run.stderr.decode()
    events = [orjson.loads(line) for line in run.stdout.splitlines()]
    # W-2 is out of the rule's scope; 200 degF is 93.3 degC, below the threshold.
    assert [(e["device_id"], e["ts"], e["event"], e["state"]) for e in events] == [
        ("W-1", "2026-11-01T00:01:00Z", "firing", "firing"),
        ("W-1", "2026-11-01T00:02:00Z", "resolved", "resolved")]
    assert events[0]["rule"] == "hot" and events[0]["value"] == 125


def test_a_bad_rules_file_names_the_rule(tmp_path: Path) -> None:
    data = tmp_path / "readings.jsonl"
    data.write_bytes(b'{"device_id": "W-1", "ts": "2026-11-01T00:00:00Z", "pip": 900}\n')
    rules = tmp_path / "rules.json"
    rules.write_bytes(b'[{"type": "threshold", "name": "ok", "metric": "pip", "op": ">", '
                      b'"value": 1}, {"type": "threshold", "name": "bad", "metric": "pip"}]')
    run = backtest(data, "--rules", rules)
    assert run.returncode == 2 and b"rule 2:" in run.stderr and run.stdout == b""
