"""ESP failure signatures: how each failure shows on the amp chart, pressures, flow,
temperatures and vibration, judged against the well's own affinity-scaled baseline.

Each check returns a Finding: rank 0 when the condition is judged absent, 2 (warning)
or 3 (critical) when present, or None when the metrics it needs are missing (it then
neither raises nor clears). Hydraulic failures tell themselves apart by which way PIP,
discharge pressure and current move together:

| failure      | flow   | current          | PIP        | discharge / head |
|--------------|--------|------------------|------------|------------------|
| gas lock     | down   | down, erratic    | not down   | head down        |
| pump-off     | down   | down             | down       |                  |
| broken shaft | ~0     | no-load, steady  | up         | head collapses   |
| closed valve | down   | down             | up a bit   | discharge up     |
"""

from __future__ import annotations

from typing import Any

from shared.diagnosis.baseline import Baseline
from shared.diagnosis.view import Finding, View, confidence, evidence, round4

HYDRAULIC = ("gas_lock", "pump_off", "broken_shaft", "closed_valve")


def broken_shaft(view: View) -> Finding | None:
    rule = view.rules["broken_shaft"]
    current = view.ratio("motor_current")
    flow, head, pip = view.ratio("flow_rate"), view.ratio("head"), view.ratio("pip")
    whp = view.ratio("wellhead_pressure")
    if current is None:
        return None
    shown = ("motor_current", "flow_rate", "head", "pip", "wellhead_pressure")
    if flow is not None or head is not None:
        signals = [current < view.eased("broken_shaft", rule["current_ratio"], 1.0)]
        if flow is not None:
            signals.append(flow < view.eased("broken_shaft", rule["flow_ratio"], 1.0))
        if head is not None:
            signals.append(head < view.eased("broken_shaft", rule["head_ratio"], 1.0))
    else:
        # Without flow or head: down to what a motor draws unloaded (an underload keeps
        # far more), at once and steadily (below), with the annulus not being drawn down
        # (pumped off) and the wellhead pressure not rising (a closed valve).
        if pip is None and whp is None:
            return None
        signals = [current < view.eased("broken_shaft", rule["no_load_ratio"], 1.0),
                   pip is None or pip >= rule["pip_not_falling_ratio"],
                   whp is None or whp <= rule["whp_not_rising_ratio"]]
    if not all(signals):
        return Finding("broken_shaft", 0)
    ragged = view.raggedness("motor_current")
    expected = view.expected("motor_current") or 0.0
    # Raised only on a sudden, steady drop to no-load (gas unloads a pump gradually and
    # raggedly); once raised it holds while the pump stays unloaded.
    steady = ragged is None or ragged < rule["steady_cv"] * expected
    raisable = steady and _dropped_at_once(view, expected, rule)
    if not (raisable or "broken_shaft" in view.active):
        return Finding("broken_shaft", 0)
    if not raisable and erratic_current(view):
        # A parted shaft leaves the motor at a steady no-load current; one gone ragged
        # since is a pump unloaded by gas (gas_lock), not a broken shaft.
        return Finding("broken_shaft", 0)
    extra = int(pip is not None and pip >= 1.0)
    return Finding("broken_shaft", 3, confidence(len(signals) + extra, len(signals) + 1, 4),
                   evidence(view, shown, current_step_median=round4(ragged)),
                   held=not raisable)


def closed_valve(view: View) -> Finding | None:
    rule = view.rules["closed_valve"]
    pressure_metric = next((m for m in ("discharge_pressure", "wellhead_pressure")
                            if view.ratio(m) is not None), None)
    current = view.ratio("motor_current")
    if pressure_metric is None or current is None:
        return None
    pressure = view.ratio(pressure_metric)
    assert pressure is not None
    flow = view.ratio("flow_rate")
    up = pressure > view.eased("closed_valve", rule["discharge_ratio"], 1.0)
    unloaded = current < view.eased(
        "closed_valve", rule["current_ratio"] if flow is not None else 0.9, 1.0)
    blocked = flow is None or flow < view.eased("closed_valve", rule["flow_ratio"], 1.0)
    if not (up and unloaded and blocked):
        return Finding("closed_valve", 0)
    critical = pressure > rule["critical_discharge_ratio"] or (
        flow is not None and flow < rule["critical_flow_ratio"])
    temp_up = view.rise("motor_temp")
    satisfied = 3 + int(temp_up is not None and temp_up > 3)
    return Finding("closed_valve", 3 if critical else 2,
                   confidence(satisfied, 3 + int(temp_up is not None), 4),
                   evidence(view, (pressure_metric, "flow_rate", "motor_current", "motor_temp")))


def gas_lock(view: View) -> Finding | None:
    """Free gas at the intake: the pump stops lifting (flow or head down), the motor
    unloads and its current turns ragged, the annulus fills (PIP not down). Without a
    flow meter or discharge gauge it is read from the motor, PIP and the wellhead:
    deeper unloading, ragged current, and PIP rising, the wellhead pressure falling or
    gas measured (a surer sign, as the evidence says what could not be checked)."""
    rule = view.rules["gas_lock"]
    current = view.ratio("motor_current")
    if current is None:
        return None
    flow, head = view.ratio("flow_rate"), view.ratio("head")
    lift = flow if flow is not None else head
    ragged = view.raggedness("motor_current")
    erratic = erratic_current(view)
    gor = view.ratio("gor")
    gassy = gor is not None and gor > rule["gor_ratio"]
    pip = view.ratio("pip")
    # The annulus filling now: less leaves the well than flows in (a pump-off draws it
    # down). Said by the trend, as a level learned while a restart's annulus was still
    # full, or before a setpoint step, may sit far above where PIP is.
    filling_now = annulus_filling(view)
    pip_not_down = pip is None or pip >= rule["pip_not_below_ratio"] or filling_now
    # Raggedness or gas is needed to raise it; a pump that stays gas locked may go quiet.
    holding = "gas_lock" in view.active
    if lift is None:  # only the motor, the intake and the wellhead to go on
        if pip is None:
            return None
        whp = view.ratio("wellhead_pressure")
        # Less leaving the well: the annulus fills, or the wellhead pressure falls away.
        filling = pip > rule["pip_rising_ratio"] or filling_now or (
            whp is not None and whp < rule["whp_falling_ratio"])
        # Or the annulus is at least not being drawn down (a pump-off is): a motor
        # unloaded and ragged at a full intake is gas, however fast the sampling that
        # sees PIP move only slowly (a worn or parted pump's current is steady).
        holding_level = pip >= rule["pip_holding_ratio"] and not annulus_drawn_down(view)
        raisable = erratic and (filling or gassy or holding_level)
        present = current < view.eased("gas_lock", rule["unloaded_ratio"], 1.0) and \
            pip_not_down and (holding or raisable)
        critical = current < rule["critical_unloaded_ratio"]
    else:
        head_falls = head is None or head < 1.0  # rising head is a restriction, not gas
        present = lift < view.eased("gas_lock", rule["flow_ratio"], 1.0) and \
            current < view.eased("gas_lock", rule["current_ratio"], 1.0) and head_falls and \
            pip_not_down and (holding or erratic or gassy)
        raisable = erratic or gassy
        critical = lift < rule["critical_flow_ratio"]
    if not present:
        return Finding("gas_lock", 0)
    temp_up = view.rise("motor_temp")
    satisfied = 2 + int(lift is not None) + int(erratic) + int(gassy) + int(
        pip is not None) + int(temp_up is not None and temp_up > 3)
    available = 2 + int(lift is not None) + int(ragged is not None) + int(gor is not None) + \
        int(pip is not None) + int(temp_up is not None)
    return Finding("gas_lock", 3 if critical else 2, confidence(satisfied, available, 7),
                   evidence(view, ("flow_rate", "head", "motor_current", "pip", "gor",
                                    "motor_temp"), current_step_median=round4(ragged)),
                   held=not raisable)


def erratic_current(view: View) -> bool:
    """The amp chart's ragged line of gas: the current's raggedness, for the current it
    draws now (an unloaded motor's swings are smaller in amperes), well beyond what this
    transmitter's noise makes of a steady motor (the median second difference of white
    noise is about 1.65 sigma), and beyond a coarse transmitter's rounding (a ramp read
    in whole amperes steps by one)."""
    ragged, current = view.raggedness("motor_current"), view.ratio("motor_current")
    if ragged is None or current is None:
        return False
    return ragged > max(view.rules["gas_lock"]["erratic_cv"] * view.values["motor_current"],
                        3 * 1.65 * view.noise("motor_current") * current,
                        1.5 * view.resolution("motor_current"))


def annulus_filling(view: View) -> bool:
    """PIP rising over the recent readings by several times its transmitter's noise."""
    change = view.change("pip")
    return change is not None and change > 4 * view.noise("pip")


def annulus_drawn_down(view: View) -> bool:
    """PIP falling over the recent readings by several times its transmitter's noise."""
    change = view.change("pip")
    return change is not None and change < -4 * view.noise("pip")


def pump_off(view: View) -> Finding | None:
    rule = view.rules["pump_off"]
    pip = view.ratio("pip")
    before = view.baseline.pip_before
    if pip is not None and before is not None and before < view.expectations["pip"]:
        # Drawn down from the lower of the levels before and after a new operating point:
        # one learned while a restart's full annulus drained is not where PIP settles.
        pip = view.values["pip"] / before if before > 1e-9 else None
    flow, current = view.ratio("flow_rate"), view.ratio("motor_current")
    if pip is None or (flow is None and current is None):
        return None
    unloading = (flow is not None and flow < rule["flow_ratio"]) or (
        current is not None and current < rule["current_ratio"])
    # PIP well down; or less far down (a gassy annulus stalls it) with the flow collapsed.
    drawn_down = pip < view.eased("pump_off", rule["pip_ratio"], 1.0) or (
        flow is not None and flow < rule["collapsed_flow_ratio"] and
        pip < view.eased("pump_off", rule["pip_ratio_with_collapsed_flow"], 1.0))
    # An annulus filling is the pump lifting less than flows in: no pump-off (however far
    # below a level learned while it was full PIP may sit).
    if not (drawn_down and unloading) or annulus_filling(view):
        return Finding("pump_off", 0)
    satisfied = 1 + int(flow is not None and flow < rule["flow_ratio"]) + int(
        current is not None and current < rule["current_ratio"])
    available = 1 + int(flow is not None) + int(current is not None)
    critical = pip < rule["critical_pip_ratio"] or (
        flow is not None and flow < rule["critical_flow_ratio"])
    return Finding("pump_off", 3 if critical else 2,
                   confidence(satisfied, available, 3),
                   evidence(view, ("pip", "flow_rate", "motor_current")))


def overload(view: View) -> Finding | None:
    rule = view.rules["overload"]
    current = view.ratio("motor_current")
    if current is None:
        return None
    warning = view.eased("overload", rule["warning_ratio"], 1.0)
    rank = 3 if current > rule["critical_ratio"] else 2 if current > warning else 0
    if view.beyond_limit("motor_current", high=True):
        rank = 3
    # More current for more flow is hydraulic load, not torque: a restart drawing a full
    # annulus down pumps more. Without a flow meter, a PIP above normal says the same, for
    # as much extra current as that much fuller an annulus can push through the pump.
    flow, pip = view.ratio("flow_rate"), view.ratio("pip")
    if (flow is not None and flow - 1 >= rule["explained_by_flow"] * (current - 1)) or \
            (flow is None and pip is not None and pip > rule["explained_by_pip"] and
             current - 1 <= rule["current_per_pip"] * (pip - 1)):
        rank = 0
    if not rank:
        return Finding("overload", 0)
    power = view.ratio("power")
    temp_up = view.rise("motor_temp")
    satisfied = 1 + int(power is not None and power > 1.05) + int(
        temp_up is not None and temp_up > 2)
    available = 1 + int(power is not None) + int(temp_up is not None)
    return Finding("overload", rank, confidence(satisfied, available, 3),
                   evidence(view, ("motor_current", "power", "motor_temp")))


def underload(view: View) -> Finding | None:
    rule = view.rules["underload"]
    current = view.ratio("motor_current")
    if current is None:
        return None
    warning = view.eased("underload", rule["warning_ratio"], 1.0)
    rank = 3 if current < rule["critical_ratio"] else 2 if current < warning else 0
    if not rank:
        return Finding("underload", 0)
    flow = view.ratio("flow_rate")
    satisfied = 1 + int(flow is not None and flow < 0.9)
    return Finding("underload", rank, confidence(satisfied, 1 + int(flow is not None), 2),
                   evidence(view, ("motor_current", "flow_rate", "pip")))


def overheating(view: View) -> Finding | None:
    rule = view.rules["overheating"]
    rise = view.rise("motor_temp")
    if rise is None:
        return None
    warning = view.eased("overheating", rule["warning_rise"], 0.0)
    critical = view.eased("overheating", rule["critical_rise"], rule["warning_rise"])
    rank = 3 if rise > critical else 2 if rise > warning else 0
    if view.beyond_limit("motor_temp", high=True):
        rank = 3
    if not rank:
        return Finding("overheating", 0)
    trend = view.slope_per_hour("motor_temp")
    return Finding("overheating", rank,
                   confidence(1 + int(trend is not None and trend > 0), 2, 2),
                   evidence(view, ("motor_temp", "motor_current", "flow_rate", "intake_temp"),
                             rise_degc=round(rise, 2), trend_per_hour=round4(trend)))


def bearing_wear(view: View) -> Finding | None:
    rule = view.rules["bearing_wear"]
    ratio, rise = view.ratio("vibration"), view.rise("vibration")
    if ratio is None or rise is None:
        return None
    rank = 0
    if ratio >= view.eased("bearing_wear", rule["warning_ratio"], 1.0) and \
            rise >= rule["min_rise"]:
        rank = 2
    if ratio >= rule["critical_ratio"] and rise >= 2 * rule["min_rise"]:
        rank = 3
    if view.beyond_limit("vibration", high=True):
        rank = 3
    if not rank:
        return Finding("bearing_wear", 0)
    trend = view.slope_per_hour("vibration")
    current = view.ratio("motor_current")
    satisfied = 1 + int(trend is not None and trend > 0) + int(current is not None and
                                                               current > 1.02)
    return Finding("bearing_wear", rank, confidence(satisfied, 3, 3),
                   evidence(view, ("vibration", "motor_current"), trend_per_hour=round4(trend)))


def equipment_range(equipment: dict[str, float], ranges: dict[str, Any]
                    ) -> tuple[float | None, float | None]:
    """The frequencies the drive is configured for: the equipment's attributes, else the
    limits' `ranges.vsd_frequency.critical` where an operator has set one."""
    low, high = ranges.get("vsd_frequency", {}).get("critical", [None, None])
    return equipment.get("vsd_min_hz", low), equipment.get("vsd_max_hz", high)


def usual_band(baseline: Baseline, equipment: dict[str, float], limits: dict[str, Any]
               ) -> tuple[float | None, float | None]:
    """Where a settled setpoint counts as the operator's (and widens the well's band):
    inside the configured range where it is known, else within `own_band_hz` of where
    the well has run before."""
    rule = limits["rules"]["vsd_out_of_range"]
    low, high = equipment_range(equipment, limits["ranges"])
    margin = rule["margin_hz"]
    if low is not None or high is not None:
        return (None if low is None else low - margin, None if high is None else high + margin)
    if baseline.hz_band is None:
        return None, None
    return baseline.hz_band.low - rule["own_band_hz"], baseline.hz_band.high + rule["own_band_hz"]


def vsd_out_of_range(view: View) -> Finding | None:
    """Beyond the range the drive is configured for (critical), or, where that is not
    known, far from every setpoint the well has settled at (warning); or hunting (the
    frequency unsteady, warning). An operator's steady setpoint inside either is no
    fault, and no fleet-wide band is assumed."""
    frequency = view.frequency
    if frequency is None:
        return None
    rule = view.rules["vsd_out_of_range"]
    margin = rule["margin_hz"]  # at the limit plus measurement noise is not beyond it
    band = view.baseline.hz_band
    low, high = equipment_range(view.equipment, view.ranges)
    # A well normally run beyond its configured range has a wrong attribute, not a fault.
    moved = band is None or not (band.low - rule["own_setpoint_hz"] <= frequency
                                 <= band.high + rule["own_setpoint_hz"])
    if moved and ((low is not None and frequency < low - margin) or
                  (high is not None and frequency > high + margin)):
        return Finding("vsd_out_of_range", 3, 0.95, evidence(
            view, ("vsd_frequency",), configured_range=[low, high],
            usual_range=None if band is None else [round4(b) for b in band]))
    if low is None and high is None and band is not None and (
            frequency < band.low - view.eased("vsd_out_of_range", rule["own_band_hz"], 0.0) or
            frequency > band.high + view.eased("vsd_out_of_range", rule["own_band_hz"], 0.0)):
        return Finding("vsd_out_of_range", 2, 0.75, evidence(
            view, ("vsd_frequency",), usual_range=[round4(b) for b in band]))
    hunting = view.raggedness("vsd_frequency")
    frequencies = [r["vsd_frequency"] for r in view.recent if "vsd_frequency" in r]
    # Unsteady, and by more than a coarse transmitter's rounding flickers (52/53 Hz).
    if hunting is not None and hunting > rule["unsteady_hz"] and \
            max(frequencies) - min(frequencies) > 2 * rule["unsteady_hz"]:
        return Finding("vsd_out_of_range", 2, 0.7, evidence(
            view, ("vsd_frequency",), hunting_hz=round4(hunting)))
    return Finding("vsd_out_of_range", 0)


def _dropped_at_once(view: View, expected: float, rule: dict[str, Any]) -> bool:
    """The current fell from loaded to no-load in a reading or two (a shaft parting), not
    over many (gas building up), judged over the recent readings: the discharge may take
    a while longer to bleed down."""
    currents = [r["motor_current"] for r in view.recent if "motor_current" in r]
    loaded = [i for i, c in enumerate(currents) if c > rule["loaded_before_ratio"] * expected]
    if not loaded:
        return False
    unloaded = rule["current_ratio"] * expected
    in_between = [c for c in currents[loaded[-1] + 1:] if c >= unloaded]
    return len(in_between) <= rule["drop_readings"]


# How far from normal a reading may be and still be quiet (see `quiet`).
QUIET_RATIO, QUIET_RISE_DEGC, QUIET_VIBRATION_RATIO = 0.1, 5.0, 1.5


def quiet(view: View) -> bool:
    """Nothing the fault checks look at is far from normal, so every one of them would
    find its condition absent (each threshold is further out, even eased by hysteresis,
    and an absolute limit counts only where the well sits well inside it): most readings
    of a healthy fleet skip them."""
    for metric in ("motor_current", "flow_rate", "pip", "discharge_pressure",
                   "wellhead_pressure", "head", "power", "gor"):
        ratio = view.ratios.get(metric)
        if ratio is not None and abs(ratio - 1) >= QUIET_RATIO:
            return False
    rise = view.rise("motor_temp")
    if rise is not None and rise >= QUIET_RISE_DEGC:
        return False
    vibration = view.ratios.get("vibration")
    if vibration is not None and vibration >= QUIET_VIBRATION_RATIO:
        return False
    for metric in ("motor_temp", "vibration"):
        if view.beyond_limit(metric, high=True):
            return False
    frequency, band = view.frequency, view.baseline.hz_band
    if frequency is None or band is None:
        return True
    rule = view.rules["vsd_out_of_range"]
    if not band.low - rule["own_setpoint_hz"] <= frequency <= band.high + rule["own_setpoint_hz"]:
        return False
    recent = view.recent
    if len(recent) < 2:
        return True
    one, two = recent[-1].get("vsd_frequency"), recent[-2].get("vsd_frequency")
    return one is None or two is None or \
        abs(frequency - 2 * one + two) <= rule["unsteady_hz"]


FAULT_CHECKS = (broken_shaft, closed_valve, gas_lock, pump_off, overload, underload,
                overheating, bearing_wear, vsd_out_of_range)
