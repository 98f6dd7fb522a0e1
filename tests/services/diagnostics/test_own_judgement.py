"""What the engine judges a well by besides textbook numbers: its drive's configured range
and its own setpoints (never a fleet-wide band), a failing transmitter's spikes and drift,
a broken shaft without a flow meter, and a cause replacing its symptom."""

from __future__ import annotations

import math

from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.events import DiagnosisEvent, Reading
from tests.services.diagnostics.test_engine import T0, Well, alarms, run

STEADY_SENSORS = ("vsd_frequency", "pip", "motor_current", "motor_temp", "vibration",
                  "intake_temp")


def test_a_well_run_steadily_below_45_hz_raises_nothing() -> None:
    well = Well(hz=41.0, base_hz=41.0)
    events = list(run(DiagnosisEngine(), well, 600))
    well.hz = 43.0  # and an operator's step, still below any textbook band
    assert alarms(events + list(run(DiagnosisEngine(), well, 300, start=600))) == []


def test_a_drive_beyond_its_configured_range_is_critical() -> None:
    engine, well = DiagnosisEngine(), Well(hz=55.0, base_hz=55.0)
    engine.equipment["W-1"] = {"vsd_min_hz": 40.0, "vsd_max_hz": 60.0}
    events = list(run(engine, well, 200))
    well.hz = 63.0  # a step, steady after: inside any textbook band, outside this drive's
    events += run(engine, well, 20, start=200)
    assert ("vsd_out_of_range", "critical", False) in alarms(events)


def test_a_slow_drift_is_not_taken_for_operator_steps() -> None:
    # Without a configured range, settled setpoints widen the well's own band; a drive
    # drifting 0.1 Hz a reading settles "steadily" over and over, but never widens it.
    engine, well = DiagnosisEngine(), Well(hz=52.0, base_hz=52.0)
    events = list(run(engine, well, 200))
    for k in range(200, 400):
        well.hz = min(68.0, 52.0 + 0.1 * (k - 200))
        events += run(engine, well, 1, start=k)
    assert ("vsd_out_of_range", "warning", False) in alarms(events)
    band = engine.wells["W-1"].baseline.hz_band
    assert band is not None
    assert band == (52.0, 52.0) or band[1] < 53.0


def test_a_coarse_frequency_transmitter_is_not_a_hunting_drive() -> None:
    engine, well = DiagnosisEngine(), Well(hz=52.5, base_hz=52.5)
    events = []
    for k in range(400):
        values = well.values()
        values["vsd_frequency"] = float(round(values["vsd_frequency"] + (0.3 if k % 2 else -0.3)))
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert alarms(events) == []


def test_a_spiking_transmitter_is_a_sensor_fault_and_left_out() -> None:
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    for k in range(200, 260):
        values = well.values()
        if k % 4 == 0:
            values["discharge_pressure"] *= 3.0
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    raised = [e for e in events if not e.cleared and e.severity != "info"]
    assert [(e.code, e.metric, e.evidence["reason"]) for e in raised] == \
        [("sensor_fault", "discharge_pressure", "spikes")]


def test_a_drifting_flow_meter_is_a_sensor_fault_not_a_failure() -> None:
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    for k in range(200, 320):
        values = well.values()
        values["flow_rate"] *= 1 - 0.4 * min(1.0, (k - 200) / 60)  # reads ever lower
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    raised = [e for e in events if not e.cleared and e.severity != "info"]
    assert [(e.code, e.metric, e.evidence["reason"]) for e in raised] == \
        [("sensor_fault", "flow_rate", "drift")]


def sinking_winding(engine: DiagnosisEngine, well: Well, start: int) -> list[DiagnosisEvent]:
    """The winding's transmitter reads ever lower from `start` (no load changed)."""
    events = []
    for k in range(start, start + 120):
        values = well.values()
        values["motor_temp"] *= 1 - 0.45 * min(1.0, (k - start) / 60)
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    return [e for e in events if not e.cleared and e.severity != "info"]


def test_a_winding_temperature_falling_while_its_load_holds_is_a_sensor_fault() -> None:
    # Winding 85 degC in 70 degC fluid; current, flow and pressures hold: its losses and
    # its cooling are what they were, so its temperature cannot fall.
    engine, well = DiagnosisEngine(), Well()
    list(run(engine, well, 200))
    raised = sinking_winding(engine, well, 200)
    assert [(e.code, e.metric, e.evidence["reason"]) for e in raised] == \
        [("sensor_fault", "motor_temp", "drift")]


def test_a_winding_reading_cooler_than_the_fluid_that_cools_it_is_a_sensor_fault() -> None:
    # Soon after a start (a cooler winding is then normal, so a fall alone is not judged)
    # the transmitter sinks below the fluid that cools the motor: still told.
    engine, well = DiagnosisEngine(), Well()
    list(run(engine, well, 200))
    list(run(engine, well, 10, start=200, running=False))
    list(run(engine, well, 30, start=210))
    raised = sinking_winding(engine, well, 240)
    assert [(e.code, e.metric, e.evidence["reason"]) for e in raised] == \
        [("sensor_fault", "motor_temp", "winding cooler than the well fluid")]
    assert raised[0].evidence["metrics"]["motor_temp"]["value"] < 65.0


def test_a_winding_warming_up_after_a_restart_is_no_fault() -> None:
    # Stopped long enough to cool to the fluid's 70 degC, then warming back to 110 degC
    # with a 40-minute time constant at full load: well below its normal for an hour and
    # more, and rightly so.
    engine, well = DiagnosisEngine(), Well(motor_temp=110.0)
    events = list(run(engine, well, 300))
    events += run(engine, well, 120, start=300, running=False)
    for k in range(420, 700):
        values = well.values()
        values["motor_temp"] = 70.0 + 40.0 * (1 - math.exp(-(k - 420) * 30 / 2400))
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert alarms(events) == []


def test_a_broken_shaft_is_told_without_flow_or_discharge_gauges() -> None:
    engine, well = DiagnosisEngine(), Well(sensors=STEADY_SENSORS)
    events = list(run(engine, well, 200))
    well.current *= 0.35  # the motor spins unloaded at once
    events += run(engine, well, 20, start=200)
    assert alarms(events)[0] == ("broken_shaft", "critical", False)


def test_a_cause_replaces_its_more_severe_symptom_at_that_severity() -> None:
    # Gas takes hold slowly: the motor unloads (underload, critical) before its current
    # turns ragged enough to tell gas lock; the cause then replaces the symptom, saying so,
    # and keeps its severity: a page is never downgraded.
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    well.current *= 0.55
    well.flow *= 0.15
    events += run(engine, well, 12, start=200)
    for k in range(212, 240):
        values = well.values()
        values["motor_current"] *= 1.15 if k % 2 else 0.85
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    assert alarms(events) == [("underload", "critical", False), ("underload", "critical", True),
                              ("gas_lock", "critical", False)]
    cleared = next(e for e in events if e.code == "underload" and e.cleared)
    assert cleared.evidence["superseded_by"] == "gas_lock"


NO_FLOW_METER = ("vsd_frequency", "pip", "discharge_pressure", "motor_current", "motor_temp",
                 "intake_temp")


def test_a_current_falling_while_the_pump_makes_its_head_is_a_sensor_fault() -> None:
    # No flow meter, but the discharge and intake gauges: the pump still makes its head at
    # this frequency, so it still lifts what it did and its load cannot have fallen.
    engine, well = DiagnosisEngine(), Well(sensors=NO_FLOW_METER)
    events = list(run(engine, well, 200))
    for k in range(200, 320):
        values = well.values()
        values["motor_current"] *= 1 - 0.45 * min(1.0, (k - 200) / 60)  # reads ever lower
        events += engine.process(Reading("W-1", T0 + k * 30, values))
    raised = [e for e in events if not e.cleared and e.severity != "info"]
    assert [(e.code, e.metric, e.evidence["reason"]) for e in raised][:1] == \
        [("sensor_fault", "motor_current", "drift")]
    assert "underload" not in [e.code for e in raised]


def test_a_worn_pump_unloading_its_motor_is_no_sensor_fault() -> None:
    # The same current falling, but the head falls with it (worn impellers): the pump.
    engine, well = DiagnosisEngine(), Well(sensors=NO_FLOW_METER)
    events = list(run(engine, well, 200))
    for k in range(200, 320):
        wear = 1 - 0.3 * min(1.0, (k - 200) / 60)
        well.current, well.head = 50.0 * (0.3 + 0.7 * wear ** 3), 1900.0 * wear ** 2
        events += run(engine, well, 1, start=k)
    raised = [e for e in events if not e.cleared and e.severity != "info"]
    assert "sensor_fault" not in [e.code for e in raised]
    assert ("underload", "critical") in [(e.code, e.severity) for e in raised]


def gassy_readings(engine: DiagnosisEngine, well: Well, start: int, count: int,
                   interval: float, ragged: float = 0.12) -> list[DiagnosisEvent]:
    """The motor unloaded, its current ragged by `ragged` either way (gas), from `start`."""
    events = []
    for k in range(start, start + count):
        values = well.values()
        values["motor_current"] *= 1 + (ragged if k % 2 else -ragged)
        events += engine.process(Reading("W-1", T0 + k * interval, values))
    return events


def test_a_gas_lock_is_told_from_a_ragged_unloaded_motor_at_a_full_intake() -> None:
    # Only current and PIP, sampled every 2 s: the annulus fills far too slowly to be seen
    # rising, but it is not being drawn down (a pump-off), and a worn or parted pump's
    # current is steady: the ragged amp chart is gas.
    engine, well = DiagnosisEngine(), Well(sensors=STEADY_SENSORS)
    events = list(run(engine, well, 300, interval=2.0))
    well.current *= 0.55
    events += gassy_readings(engine, well, 300, 40, 2.0)
    assert ("gas_lock", "critical", False) in alarms(events)


def test_a_steadily_unloaded_motor_at_a_full_intake_is_no_gas_lock() -> None:
    engine, well = DiagnosisEngine(), Well(sensors=STEADY_SENSORS)
    events = list(run(engine, well, 300, interval=2.0))
    for k in range(300, 360):  # worn impellers: the current falls over a minute, steadily
        well.current = 50.0 * (1 - 0.45 * min(1.0, (k - 300) / 30))
        events += run(engine, well, 1, start=k, interval=2.0)
    assert "gas_lock" not in [code for code, _, _ in alarms(events)]
    assert ("underload", "critical", False) in alarms(events)


def test_a_gas_lock_is_told_while_the_annulus_fills_from_below_its_learned_level() -> None:
    # PIP had been learned high (a full annulus after a restart) and sits well below it
    # when gas takes hold; the pump lifting less, the annulus fills: not a pump-off.
    engine, well = DiagnosisEngine(), Well()
    events = list(run(engine, well, 200))
    well.pip = 500.0  # drawn down since, slowly, with no other change: the level lags
    events += run(engine, well, 30, start=200)
    well.current *= 0.6
    well.flow *= 0.3
    events = []
    for k in range(230, 270):
        well.pip = 500.0 + 8.0 * (k - 230)  # filling
        events += gassy_readings(engine, well, k, 1, 30.0)
    # Until the filling shows, a collapsed flow below the learned level looks pumped off;
    # once it shows, gas lock replaces it and stands.
    assert ("gas_lock", "critical", False) in alarms(events)
    standing = {(e.code, e.metric) for e in events if e.severity != "info" and not e.cleared} - \
        {(e.code, e.metric) for e in events if e.cleared}
    assert standing == {("gas_lock", None)}
