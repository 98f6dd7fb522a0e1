"""The diagnosis engine on its own: what a healthy well's operations must not raise, and
how raising, changing and clearing behave. Faults end to end are in test_scenarios.py
(generated wells) and test_service.py (through the real pipeline)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.events import DiagnosisEvent, OpenDiagnosis, Reading
from shared.diagnosis.limits import LimitBook

T0 = 1_790_000_000.0


@dataclass
class Well:
    """A centrifugal pump on a VSD with a straight-line inflow: flow ∝ f, head ∝ f², PIP
    falls as flow rises, motor current = magnetizing part + load part ∝ f²."""

    device_id: str = "W-1"
    hz: float = 55.0
    flow: float = 2000.0      # bbl/d at `base_hz`
    head: float = 1900.0      # psi at `base_hz`
    pip: float = 900.0
    current: float = 50.0
    motor_temp: float = 85.0
    vibration: float = 0.5
    base_hz: float = 55.0
    productivity: float = 4.0  # bbl/d per psi of drawdown
    sensors: tuple[str, ...] = ("vsd_frequency", "flow_rate", "pip", "discharge_pressure",
                                "motor_current", "motor_temp", "vibration", "intake_temp")
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def values(self, running: bool = True) -> dict[str, float]:
        n = self.rng.gauss
        if not running:
            truth = {"vsd_frequency": 0.0, "flow_rate": 0.0, "pip": self.pip + 400,
                     "discharge_pressure": self.pip + 400, "motor_current": 0.0,
                     "motor_temp": 70.0, "vibration": 0.0, "intake_temp": 70.0}
        else:
            r = self.hz / self.base_hz
            flow = self.flow * r
            pip = self.pip - (flow - self.flow) / self.productivity
            truth = {"vsd_frequency": self.hz, "flow_rate": flow, "pip": pip,
                     "discharge_pressure": pip + self.head * r ** 2,
                     "motor_current": self.current * (0.3 + 0.7 * r ** 2),
                     "motor_temp": self.motor_temp + 5 * (r ** 2 - 1), "vibration": self.vibration,
                     "intake_temp": 70.0}
        noise = {"vsd_frequency": 0.02, "flow_rate": 12, "pip": 3, "discharge_pressure": 6,
                 "motor_current": 0.3, "motor_temp": 0.3, "vibration": 0.02, "intake_temp": 0.2}
        return {m: max(0.0, v + n(0, noise[m]) if v else v) for m, v in truth.items()
                if m in self.sensors}


def run(engine: DiagnosisEngine, well: Well, count: int, start: int = 0, *,
        interval: float = 30.0, running: bool = True) -> Iterator[DiagnosisEvent]:
    for k in range(start, start + count):
        yield from engine.process(Reading(well.device_id, T0 + k * interval,
                                          well.values(running)))


def alarms(events: list[DiagnosisEvent]) -> list[tuple[str, str, bool]]:
    return [(e.code, e.severity, e.cleared) for e in events if e.severity != "info"]


def test_a_healthy_well_at_an_unusual_operating_point_raises_nothing() -> None:
    # Far outside the textbook ranges (flow 1000-3000, current 40-60 A, 60-90 degC).
    well = Well(flow=600, current=95, motor_temp=112, hz=48, base_hz=48, pip=300)
    assert alarms(list(run(DiagnosisEngine(), well, 2000))) == []


@pytest.mark.parametrize("new_hz", [50.0, 58.0, 60.0], ids=lambda hz: f"to-{hz:g}Hz")
def test_an_operator_setpoint_step_is_not_a_fault(new_hz: float) -> None:
    # A tight well: PIP moves a lot with flow, so the new operating point is not simply the
    # old one scaled by the affinity laws; once settled it is learned, not even an anomaly.
    engine, well = DiagnosisEngine(), Well(productivity=0.8)
    events = list(run(engine, well, 200))
    well.hz = new_hz
    events += run(engine, well, 400, start=200)
    assert events == []
    assert engine.wells["W-1"].baseline.reference_hz == pytest.approx(new_hz, abs=0.1)


def test_a_planned_stop_and_restart_with_inrush_is_not_a_fault() -> None:
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    events += run(engine, well, 60, start=200, running=False)
    # Restart: two readings of inrush at several times the running current.
    for k, factor in ((260, 5.0), (261, 2.5)):
        values = well.values() | {"motor_current": well.current * factor}
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    events += run(engine, well, 300, start=262)
    assert alarms(events) == []


def test_single_sample_spikes_and_gaps_raise_nothing() -> None:
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 100))
    for k in range(100, 400):
        values = well.values()
        if k % 37 == 0:
            values["motor_current"] *= 1.8
        if k % 53 == 0:
            values["discharge_pressure"] *= 1.5
        if k % 41 == 0:
            del values["flow_rate"]
        gap = 3600 if k == 250 else 0
        events += engine.process(Reading("W-1", T0 + k * 30 + gap, values))
    assert alarms(events) == []


def test_a_fault_is_raised_once_escalates_and_clears_with_hysteresis() -> None:
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 100))
    well.current *= 1.2  # over the well's normal by 20 %: a warning
    events += run(engine, well, 20, start=100)
    well.current /= 1.2
    well.current *= 1.5  # 50 %: critical
    events += run(engine, well, 20, start=120)
    well.current /= 1.5
    events += run(engine, well, 40, start=140)
    assert alarms(events) == [("overload", "warning", False), ("overload", "critical", False),
                              ("overload", "critical", True)]


def test_repeated_and_late_readings_are_skipped() -> None:
    engine, well = DiagnosisEngine(), Well()
    readings = [Reading("W-1", T0 + k * 30, well.values()) for k in range(50)]
    for reading in readings:
        engine.process(reading)
    assert engine.process(readings[10]) == [] and engine.process(readings[-1]) == []
    assert engine.skipped == 2


def test_missing_sensors_are_named_in_the_evidence() -> None:
    engine = DiagnosisEngine()
    well = Well(sensors=("vsd_frequency", "motor_current", "discharge_pressure", "pip"))
    list(run(engine, well, 100))
    well.head *= 1.4
    well.current *= 0.8
    events = [e for e in run(engine, well, 20, start=100) if e.code == "closed_valve"]
    assert events and "flow_rate" in events[0].evidence["not_checked"]
    assert events[0].confidence < 0.98  # less sure without a flow meter


def test_a_device_override_changes_the_threshold() -> None:
    overrides = {"devices": {"W-1": {"rules": {"overload": {"warning_ratio": 1.5,
                                                             "critical_ratio": 1.8}}}}}
    for limits, expected in ((LimitBook(), [("overload", "warning", False)]),
                             (LimitBook(overrides), [])):
        engine, well = DiagnosisEngine(limits), Well()
        list(run(engine, well, 100))
        well.current *= 1.25
        assert alarms(list(run(engine, well, 20, start=100))) == expected


def test_a_restarted_engine_continues_from_stored_open_diagnoses() -> None:
    engine, well = DiagnosisEngine(), Well()
    list(run(engine, well, 100))
    engine.reset_diagnoses("W-1", [OpenDiagnosis("overload", None, "warning", 0.9, {}, T0)])
    well.current *= 1.2  # still overloaded: not raised again
    assert alarms(list(run(engine, well, 20, start=100))) == []
    well.current /= 1.2  # recovered: the stored diagnosis is cleared
    assert alarms(list(run(engine, well, 20, start=120))) == [("overload", "warning", True)]


def test_idle_wells_are_forgotten_and_memory_is_bounded() -> None:
    engine = DiagnosisEngine(max_devices=10)
    for n in range(25):
        engine.process(Reading(f"W-{n}", T0, Well(seed=n).values()))
    assert len(engine.wells) == 10 and "W-24" in engine.wells and "W-0" not in engine.wells
