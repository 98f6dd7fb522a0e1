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

from services.diagnostics.view import Finding, View, confidence, evidence, round4

HYDRAULIC = ("gas_lock", "pump_off", "broken_shaft", "closed_valve")


def broken_shaft(view: View) -> Finding | None:
    rule = view.rules["broken_shaft"]
    current = view.ratio("motor_current")
    hydraulic = [r for r in (view.ratio("flow_rate"), view.ratio("head")) if r is not None]
    if current is None or not hydraulic:
        return None  # without flow or head it cannot be told from an underload
    shown = ("motor_current", "flow_rate", "head", "pip")
    flow, head = view.ratio("flow_rate"), view.ratio("head")
    signals = [current < view.eased("broken_shaft", rule["current_ratio"], 1.0)]
    if flow is not None:
        signals.append(flow < view.eased("broken_shaft", rule["flow_ratio"], 1.0))
    if head is not None:
        signals.append(head < view.eased("broken_shaft", rule["head_ratio"], 1.0))
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
    pip = view.ratio("pip")
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
    flow meter or discharge gauge it is read from the motor and PIP alone: deeper
    unloading, ragged current, and PIP rising or gas measured (a surer sign, as the
    evidence says what could not be checked)."""
    rule = view.rules["gas_lock"]
    current = view.ratio("motor_current")
    if current is None:
        return None
    flow, head = view.ratio("flow_rate"), view.ratio("head")
    lift = flow if flow is not None else head
    ragged = view.raggedness("motor_current")
    erratic = ragged is not None and ragged > max(
        rule["erratic_cv"] * (view.expected("motor_current") or 0.0),
        6 * view.noise("motor_current"))
    gor = view.ratio("gor")
    gassy = gor is not None and gor > rule["gor_ratio"]
    pip = view.ratio("pip")
    # Raggedness or gas is needed to raise it; a pump that stays gas locked may go quiet.
    holding = "gas_lock" in view.active
    if lift is None:  # only the motor and the intake to go on
        if pip is None:
            return None
        filling = pip > rule["pip_rising_ratio"]
        raisable = erratic and (filling or gassy)
        present = current < view.eased("gas_lock", rule["unloaded_ratio"], 1.0) and \
            pip >= rule["pip_not_below_ratio"] and (holding or raisable)
        critical = current < rule["critical_unloaded_ratio"]
    else:
        head_falls = head is None or head < 1.0  # rising head is a restriction, not gas
        present = lift < view.eased("gas_lock", rule["flow_ratio"], 1.0) and \
            current < view.eased("gas_lock", rule["current_ratio"], 1.0) and head_falls and \
            (pip is None or pip >= rule["pip_not_below_ratio"]) and \
            (holding or erratic or gassy)
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


def pump_off(view: View) -> Finding | None:
    rule = view.rules["pump_off"]
    pip = view.ratio("pip")
    flow, current = view.ratio("flow_rate"), view.ratio("motor_current")
    if pip is None or (flow is None and current is None):
        return None
    unloading = (flow is not None and flow < rule["flow_ratio"]) or (
        current is not None and current < rule["current_ratio"])
    # PIP well down; or less far down (a gassy annulus stalls it) with the flow collapsed.
    drawn_down = pip < view.eased("pump_off", rule["pip_ratio"], 1.0) or (
        flow is not None and flow < rule["collapsed_flow_ratio"] and
        pip < view.eased("pump_off", rule["pip_ratio_with_collapsed_flow"], 1.0))
    if not (drawn_down and unloading):
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
    # annulus down pumps more. Without a flow meter, a PIP above normal says the same.
    flow, pip = view.ratio("flow_rate"), view.ratio("pip")
    if (flow is not None and flow - 1 >= rule["explained_by_flow"] * (current - 1)) or \
            (flow is None and pip is not None and pip > rule["explained_by_pip"]):
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


def vsd_out_of_range(view: View) -> Finding | None:
    """Beyond the equipment's band, away from where this well is normally run; or outside
    the normal band while the drive hunts. An operator's steady setpoint is no fault."""
    frequency = view.frequency
    if frequency is None:
        return None
    rule, band = view.rules["vsd_out_of_range"], view.ranges.get("vsd_frequency", {})
    low, high = band.get("critical", [None, None])
    margin = rule["margin_hz"]  # at the limit plus measurement noise is not beyond it
    normal_hz = view.baseline.normal_hz
    moved = normal_hz is None or abs(frequency - normal_hz) > rule["own_setpoint_hz"]
    if moved and ((low is not None and frequency < low - margin) or
                  (high is not None and frequency > high + margin)):
        return Finding("vsd_out_of_range", 3, 0.95, evidence(
            view, ("vsd_frequency",), critical_range=[low, high], usual_hz=round4(normal_hz)))
    low, high = band.get("normal", [None, None])
    outside = (low is not None and frequency < low) or (high is not None and frequency > high)
    hunting = view.raggedness("vsd_frequency")
    if outside and hunting is not None and hunting > rule["unsteady_hz"]:
        return Finding("vsd_out_of_range", 2, 0.7, evidence(
            view, ("vsd_frequency",), normal_range=[low, high], hunting_hz=round4(hunting)))
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
    frequency = view.frequency
    low, high = view.ranges.get("vsd_frequency", {}).get("normal", [None, None])
    return frequency is None or ((low is None or frequency >= low) and
                                 (high is None or frequency <= high))


FAULT_CHECKS = (broken_shaft, closed_valve, gas_lock, pump_off, overload, underload,
                overheating, bearing_wear, vsd_out_of_range)
