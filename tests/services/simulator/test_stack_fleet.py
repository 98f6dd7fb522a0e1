"""The simulated fleet `make run` starts: arguments `insa simulate` accepts, several
faulty wells and healthy ones."""

from __future__ import annotations

from pathlib import Path

from devtools.stack.stack import StackConfig, simulator_argv
from services.cli import parse_scenarios, simulate
from services.simulator.faults import FAULTS


def test_stack_simulator_arguments_parse(tmp_path: Path) -> None:
    cfg = StackConfig(tmp_path, 1, 2, 3, 4, {}, 10)
    (tmp_path / "devices.env").write_text("sim-esp-001=x\n")
    argv = simulator_argv(cfg, "insa")
    assert argv[:2] == ["insa", "simulate"]
    ctx = simulate.make_context("simulate", argv[2:])
    scenarios = parse_scenarios(ctx.params["scenario"])
    assert len(set(scenarios.values())) >= 4 and set(scenarios.values()) <= set(FAULTS)
    assert 2 <= 10 - len(scenarios) < 10     # and healthy wells beside them
    assert ctx.params["fault_onset"] > 0 and ctx.params["fault_ramp"] > 0


def test_a_smaller_stack_fleet_only_names_its_devices(tmp_path: Path) -> None:
    argv = simulator_argv(StackConfig(tmp_path, 1, 2, 3, 4, {}, 3), "insa")
    named = [a.partition("=")[0] for a in argv if "=" in a]
    assert named and all(d in ("sim-esp-001", "sim-esp-002", "sim-esp-003") for d in named)
