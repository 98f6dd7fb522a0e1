"""What `make run` shows a newcomer in its first 30 minutes, replayed offline with the same
code: the stack's simulated fleet (its wells, faults and timing, `insa simulate`'s
models), the built-in rules judging each well by the equipment the stack registers for
it, through `insa rules backtest`. No alert on a healthy well; an alert on every fault
that develops within the half hour."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from devtools.stack.stack import (
    SIMULATOR_FAULT_ONSET_S,
    SIMULATOR_FAULT_RAMP_S,
    SIMULATOR_SCENARIOS,
)
from services.simulator.main import Device, SimulatorConfig
from services.simulator.well import design_well, well_attributes

WELLS = [f"sim-esp-{n:03d}" for n in range(1, 11)]  # INSA_STACK_SIM_DEVICES' default
INTERVAL, MINUTES = 5.0, 30
# The simulator's pump-off draws the annulus down over hours (its inflow falls, the
# column takes that long to drain): nothing shows in the first half hour.
SLOW_FAULTS = {"pump_off"}


def test_the_first_half_hour_pages_faults_and_never_a_healthy_well(tmp_path: Path) -> None:
    faults = {WELLS[n - 1]: fault for n, fault in SIMULATOR_SCENARIOS.items()}
    cfg = SimulatorConfig("127.0.0.1", 0, {}, INTERVAL, faults, SIMULATOR_FAULT_ONSET_S,
                          SIMULATOR_FAULT_RAMP_S)
    devices = {d: Device(cfg, d) for d in WELLS}
    start = datetime(2026, 12, 1, tzinfo=UTC)
    lines = []
    for step in range(int(MINUTES * 60 / INTERVAL)):
        t = step * INTERVAL
        for device_id, device in devices.items():
            values = device.instruments.read(t, device.model.step(t))
            if values:
                lines.append(orjson.dumps({
                    "device_id": device_id, "ts": (start + timedelta(seconds=t)).isoformat(),
                    "telemetry": device.instruments.telemetry(values)}))
    readings = tmp_path / "stack-fleet.jsonl"
    readings.write_bytes(b"\n".join(lines) + b"\n")
    attributes = tmp_path / "stack-fleet.attributes.json"
    attributes.write_bytes(orjson.dumps({d: {"attributes": well_attributes(design_well(d))}
                                         for d in WELLS}))
    run = subprocess.run([sys.executable, "-m", "services.cli", "rules", "backtest",
                          str(readings), "--attributes", str(attributes)],
                         capture_output=True, timeout=300, check=True)
    fired: dict[str, set[str]] = {d: set() for d in WELLS}
    for line in run.stdout.splitlines():
        event = orjson.loads(line)
        if event["event"] == "firing":
            fired[event["device_id"]].add(event["rule"])
    assert {d: rules for d, rules in fired.items() if d not in faults and rules} == {}
    missed = [f"{d} ({fault})" for d, fault in faults.items()
              if not fired[d] and fault not in SLOW_FAULTS]
    assert missed == []
