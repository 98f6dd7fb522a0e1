"""Failing transmitters told by pump physics (shared/diagnosis/sensors.py): spikes that a
motor or a winding cannot make, and drifts that the quantities tied to a reading do not
follow. Each case is one the engine had missed or told late on randomized wells
(docs/benchmarks.md, "Sensor faults, 2026-12-07")."""

from __future__ import annotations

from collections.abc import Callable

from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.events import DiagnosisEvent, Reading
from tests.services.diagnostics.test_engine import T0, Well, run

NO_FLOW_METER = ("vsd_frequency", "pip", "discharge_pressure", "motor_current", "motor_temp",
                 "intake_temp")


def raised(events: list[DiagnosisEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(e.code, e.metric, e.evidence.get("reason")) for e in events
            if not e.cleared and e.severity != "info"]


def ramped(well: Well, change: Callable[[dict[str, float], float], None]
           ) -> list[DiagnosisEvent]:
    """200 settled readings, then 120 more with `change(values, share)` applied, `share`
    ramping from 0 to 1 over the first 60 of them (30 s apart)."""
    engine = DiagnosisEngine()
    events = list(run(engine, well, 200))
    for k in range(200, 320):
        values = well.values()
        change(values, min(1.0, (k - 200) / 60))
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    return events


def test_a_current_drifting_down_beside_a_flow_meter_is_its_transmitter() -> None:
    # The annulus fills 10 % above the level learned (an intake rising is no pump-off),
    # while the current reads ever lower: the flow meter says the pump lifts what it did,
    # so its load has not fallen.
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    well.pip = 990.0
    for k in range(200, 320):
        values = well.values()
        values["motor_current"] *= 1 - 0.45 * min(1.0, (k - 200) / 60)
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert raised(events)[:1] == [("sensor_fault", "motor_current", "drift")]
    assert "underload" not in [code for code, _, _ in raised(events)]


def test_a_current_spiking_down_below_no_load_is_a_spiking_transmitter() -> None:
    # A running motor draws at least its magnetising current: a reading at a fifth of its
    # neighbours, and back, is the transmitter (gas swings it by tens of percent).
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    for k in range(200, 260):
        values = well.values()
        if k % 4 == 0:
            values["motor_current"] *= 0.2
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert raised(events) == [("sensor_fault", "motor_current", "spikes")]


def test_an_impossible_reading_between_plausible_ones_is_one_of_the_spikes() -> None:
    # A winding read at 545 degC every seventh reading (impossible, so left out) and at
    # 215 degC now and then: together three spikes in 20 readings.
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    for k in range(200, 240):
        values = well.values()
        if k % 7 == 0:
            values["motor_temp"] = 545.0
        elif k % 14 == 3:
            values["motor_temp"] = 215.0
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert ("sensor_fault", "motor_temp", "spikes") in raised(events)


def with_wellhead(values: dict[str, float], k: int, drift: float) -> dict[str, float]:
    values["wellhead_pressure"] = 200.0 * (1 + drift) + (k % 3 - 1) * 0.8
    return values


def test_a_wellhead_gauge_drifting_while_the_pump_makes_its_head_is_a_sensor_fault() -> None:
    # No flow meter: the head the pump makes at this frequency says its flow holds, and
    # the discharge does not follow the wellhead's psi: its transmitter.
    engine, well = DiagnosisEngine(), Well(sensors=NO_FLOW_METER)
    events = []
    for k in range(320):
        drift = 0.4 * min(1.0, max(0, k - 200) / 60)
        events += engine.process(Reading("W-1", T0 + k * 30, with_wellhead(well.values(), k,
                                                                           drift)))
    assert raised(events) == [("sensor_fault", "wellhead_pressure", "drift")]


def test_an_intake_temperature_drifting_without_a_winding_gauge_is_a_sensor_fault() -> None:
    # The fluid reaching the intake is the reservoir's: it cools by a third only if the
    # flow into the well changes, and the intake pressure says it has not.
    well = Well(sensors=("vsd_frequency", "pip", "motor_current", "intake_temp"))

    def change(values: dict[str, float], share: float) -> None:
        values["intake_temp"] *= 1 - 0.35 * share

    events = ramped(well, change)
    assert raised(events) == [("sensor_fault", "intake_temp", "drift")]


def test_an_intake_pressure_drifting_off_the_pump_curve_is_its_transmitter() -> None:
    # The intake reads ever higher while the discharge, the flow and the current hold:
    # the head worked out from it falls by a fifth and the pump lifts what it did.
    def change(values: dict[str, float], share: float) -> None:
        values["pip"] *= 1 + 0.4 * share

    events = ramped(Well(), change)
    assert raised(events)[:1] == [("sensor_fault", "pip", "drift")]


def test_a_filling_annulus_that_moves_the_pump_along_its_curve_raises_nothing() -> None:
    # The annulus fills a fifth above normal (a restart's full annulus drawn down, or the
    # inflow up): the discharge holds, the pump makes less head and lifts more, as its
    # curve says (here 5 % more flow for 10 % less head). No transmitter.
    def change(values: dict[str, float], share: float) -> None:
        values["pip"] += 180 * share
        values["flow_rate"] *= 1 + 0.05 * share

    events = ramped(Well(), change)
    assert ("sensor_fault", "pip", "drift") not in raised(events)


def test_an_intake_pressure_the_discharge_follows_raises_nothing() -> None:
    # The annulus fills 40 % and the discharge follows it psi for psi (the head holds):
    # a real change of the intake, not its transmitter.
    def change(values: dict[str, float], share: float) -> None:
        values["pip"] += 360 * share
        values["discharge_pressure"] += 360 * share

    events = ramped(Well(), change)
    assert ("sensor_fault", "pip", "drift") not in raised(events)


def test_a_vibration_falling_while_the_pump_runs_as_before_is_its_transmitter() -> None:
    # Vibration is the pump's speed and load: it cannot fall by half while its frequency,
    # current and flow hold. (Rising alone, it is bearing wear.)
    def change(values: dict[str, float], share: float) -> None:
        values["vibration"] *= 1 - 0.5 * share

    events = ramped(Well(), change)
    assert raised(events) == [("sensor_fault", "vibration", "drift")]


def test_a_current_falling_while_the_motor_power_holds_is_its_transmitter() -> None:
    # The annulus sits a quarter below the level learned and no flow meter reads, but the
    # motor's power holds: its load has not fallen, whatever the intake.
    engine, well = DiagnosisEngine(), Well(sensors=NO_FLOW_METER)
    events = []
    for k in range(320):
        values = well.values()
        values["power"] = 30.0 + 0.2 * (k % 3 - 1)
        if k >= 200:
            values["pip"] -= 220
            values["discharge_pressure"] -= 220
            values["motor_current"] *= 1 - 0.5 * min(1.0, (k - 200) / 60)
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert raised(events)[:1] == [("sensor_fault", "motor_current", "drift")]
    assert "underload" not in [code for code, _, _ in raised(events)]


def test_an_intake_reading_zero_while_the_motor_is_loaded_is_a_stuck_transmitter() -> None:
    # An empty intake unloads the pump; a PIP of exactly 0 while the current holds its
    # normal is the transmitter (a pumped-off well's zeros come with its current down).
    engine, well = DiagnosisEngine(), Well(sensors=NO_FLOW_METER)
    events = list(run(engine, well, 200))
    for k in range(200, 240):
        values = well.values()
        values["pip"] = 0.0
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert ("sensor_fault", "pip", "flatline") in raised(events)
