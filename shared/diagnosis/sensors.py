"""Per-metric findings: transmitters that read the impossible or stick at one value
(sensor_fault), and readings far outside the well's own range (anomaly, info only)."""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.diagnosis.baseline import Baseline
from shared.diagnosis.view import Finding, View

NOT_ANOMALOUS = ("vsd_frequency",)  # a setpoint, not a measurement of the well
# Readings that can hold at exactly 0 in a running well (no flow when dead-headed, an
# empty intake when pumped off): a run of zeros there is no stuck transmitter, unless
# the motor draws its normal current (a pump lifting nothing, or from an empty intake,
# is unloaded).
TRUE_ZEROS = ("flow_rate", "pip")
Key = tuple[str, str | None]  # (code, metric for per-sensor codes)
# Metrics no failure moves alone: each with those that physically move with it (the pump's
# flow, intake and discharge pressures and load; the motor's current and power; the intake
# and winding temperatures). One far from its normal while all of these sit at theirs is
# its transmitter drifting. Current alone is an overload, the winding's temperature alone
# overheating, vibration rising alone bearing wear, and the intake pressure moves alone
# (the annulus fills and draws down for hours; the tubing, not the intake, sets the
# discharge pressure): not judged so (pump_curve.py judges it by the pump's curve). The
# wellhead's moves alone too, but the discharge follows it.
# The fluid at the intake is the reservoir's, at its temperature while the flow into the
# well holds (the flow, or the intake pressure that balances it): where no winding
# temperature reads, those say its transmitter drifted.
TIED = {"flow_rate": ("motor_current", "pip", "discharge_pressure", "wellhead_pressure"),
        "discharge_pressure": ("wellhead_pressure", "flow_rate", "motor_current"),
        "intake_temp": ("motor_temp", "flow_rate", "pip"), "power": ("motor_current",),
        "motor_current": ("power",), "motor_voltage": ("motor_current", "power"),
        "wellhead_pressure": ("flow_rate", "head"), "motor_temp": (), "vibration": ()}
# Tied only when the metric falls. A pump's load is its flow against its head, so its
# current cannot fall while the flow holds (wear, gas and a broken shaft all lose flow),
# nor, without a flow meter, while the head it makes at this frequency holds (wear, gas
# and a broken shaft all lose head too); rising, it is an overload (drag, a heavier
# fluid) at the same flow. A winding's temperature is its fluid's plus a rise set by its
# losses (current) and its cooling (the flow past it): it cannot fall while those hold,
# once it has settled after a start or a setpoint step (View.temp_settled); rising
# alone, it is overheating. A pump's vibration is its speed and its load (worn bearings,
# sand, gas and a far operating point all raise it): it cannot fall while its frequency
# (within a setpoint step), its current and what it lifts hold; rising alone, it is
# bearing wear.
TIED_FALLING = {"motor_current": ("flow_rate", "head"),
                "motor_temp": ("motor_current", "flow_rate", "pip", "discharge_pressure",
                               "intake_temp"),
                "vibration": ("motor_current", "flow_rate", "head")}
# Also holding when the current falls, where no flow meter reads: a pump-off unloads the
# motor at one head while the annulus is drawn down, and a worn pump lifting less fills
# it while its head has barely fallen. A flow meter says it directly (both lift less):
# the intake, whose level may be one learned hours ago, is then not asked.
ALSO_FALLING = {"motor_current": ("pip",)}
# Where the motor's power reads, it alone says whether its load fell: the power is the
# current at the motor's voltage and power factor, and no factor doubles as a current
# halves (a lighter load lowers the power factor too).
SAYS_ALONE = {"motor_current": ("power",)}
# Tied in the metric's own unit, and required: the discharge gauge sits under the tubing's
# column, itself on the wellhead's pressure, so at one flow a wellhead pressure that moves
# by some psi moves the discharge by as many (a change of the flowline's or separator's
# pressure). The wellhead's transmitter drifting moves nothing else. Its flow holding is
# read from a flow meter or, without one, from the pump's head: at one frequency the pump
# curve ties the head it makes to the flow it lifts. (The intake is not
# so tied: between it and the discharge is the pump, whose head changes much for a
# little flow on a steep curve, as after a restart while the full annulus is drawn down.)
TIED_IN_UNITS = {"wellhead_pressure": "discharge_pressure"}
DERIVED_FROM = {"discharge_pressure": "head"}
# Each tied metric may move a fifth as far as the drifting one (the intake drawing down
# slowly beside a flow meter that reads half), and at least `tied_still_ratio`.
TIED_SHARE = 0.2
SPIKE_WINDOW = 20  # readings over which a transmitter's spikes are counted
# A gas-locked motor's current and a hunting drive's frequency swing (their own
# diagnoses): theirs count as spikes only far beyond such swings (`swinging_spike_ratio`).
# The head is worked out from two transmitters, judged by them.
SWINGING = ("motor_current", "vsd_frequency")


def impossible_values(raw: dict[str, float], limits: dict[str, Any]
                      ) -> tuple[list[Finding], dict[str, float]]:
    """Impossible values are a transmitter's fault: reported, and kept out of the rest."""
    rule = limits["rules"]["sensor_fault"]
    physical, rails = rule["physical"], rule["rail_values"]
    findings: list[Finding] = []
    values: dict[str, float] = {}
    # A motor the drive is running draws current: a current of exactly 0 is a transmitter.
    driven = raw.get("vsd_frequency", 0.0) >= limits["operation"]["running_min_hz"]
    for metric, value in raw.items():
        bounds = physical.get(metric)
        if ((bounds is not None and (value in rails or not bounds[0] <= value <= bounds[1]))
                or (driven and metric == "motor_current" and value == 0)):
            findings.append(Finding("sensor_fault", 2, 0.9, {
                "metrics": {metric: {"value": value}}, "reason": "impossible value",
                "physical_range": bounds}, subject=metric))
        else:
            values[metric] = value
    return findings, values


def flatlines(flat: dict[str, tuple[float, int]], baseline: Baseline,
              values: dict[str, float], limits: dict[str, Any]) -> list[Finding]:
    """A transmitter that repeats one exact value while the pump and others move."""
    needed = limits["rules"]["sensor_fault"]["flatline_readings"]
    findings: list[Finding] = []
    held = []
    moving = False
    for metric, value in values.items():
        previous, count = flat.get(metric, (None, 0))
        if previous == value:
            count += 1
            if count >= needed:
                held.append(metric)
        else:
            count = 1
            moving = moving or metric != "head"
        flat[metric] = (value, count)
    for metric in held if moving else ():
        value, count = values[metric], flat[metric][1]
        if metric == "head" or (value == 0 and metric in TRUE_ZEROS and
                                not loaded(baseline, values, limits)):
            continue
        level = baseline.levels.get(metric)
        required = level.repeats_for_flatline(needed) if level is not None else None
        if required is not None and count >= required:
            findings.append(Finding("sensor_fault", 2, 0.85, {
                "metrics": {metric: {"value": value}}, "reason": "flatline",
                "identical_readings": count}, subject=metric))
            del values[metric]  # a stuck value says nothing about the well
    return findings


def loaded(baseline: Baseline, values: dict[str, float], limits: dict[str, Any]) -> bool:
    """The motor draws its normal current at this frequency (`tied_still_ratio`)."""
    current = values.get("motor_current")
    normal = baseline.expected("motor_current", values.get("vsd_frequency"))
    if current is None or not normal:
        return False
    return abs(current / normal - 1) <= limits["rules"]["sensor_fault"]["tied_still_ratio"]


def sensors_reading_well(watched: Iterable[Key], faulty: list[Finding],
                         values: dict[str, float]) -> list[Finding]:
    """Sensors under watch that read plausibly again (towards clearing their fault)."""
    judged = {f.subject for f in faulty}
    return [Finding("sensor_fault", 0, subject=metric)
            for code, metric in watched
            if code == "sensor_fault" and metric in values and metric not in judged]


def anomalies(view: View, watched: Iterable[Key], active: Container[Key],
              limits: dict[str, Any]) -> list[Finding]:
    """Per metric, a z-score against the well's own level and its noise."""
    rule = limits["rules"]["anomaly"]
    raise_z, clear_z = rule["raise_z"], rule["clear_z"]
    heading = view.baseline.temp_on_its_way
    expectations, sigma_of = view.expectations, view.baseline.sigma
    watching = {metric for code, metric in watched if code == "anomaly"}
    findings = []
    for metric, value in view.values.items():
        expected = expectations.get(metric)
        if expected is None or metric in NOT_ANOMALOUS:
            continue
        sigma = sigma_of(metric) or 0.0
        score = (value - expected) / sigma if sigma else 0.0
        if metric == "motor_temp" and heading is not None and \
                heading.start - 3 * sigma <= value <= heading.target:
            score = 0.0  # heating toward a new operating point's temperature
        size = abs(score)
        if size > raise_z or (size > clear_z and ("anomaly", metric) in active):
            findings.append(Finding("anomaly", 1, round(min(0.95, abs(score) / 10), 2), {
                "metrics": view.show(metric), "score": round(score, 2),
                "expected_range": [round(expected - 3 * sigma, 3),
                                   round(expected + 3 * sigma, 3)]}, subject=metric))
        elif watching and metric in watching:
            findings.append(Finding("anomaly", 0, subject=metric))
    return findings


@dataclass(slots=True)
class SpikeWatch:
    """One transmitter's last readings as sent, and which of them were spikes."""

    readings: deque[float] = field(default_factory=lambda: deque(maxlen=8))
    judged: int = 0
    spikes: deque[int] = field(default_factory=deque)  # `judged` at each, the last 20
    out: bool = False  # the last reading was impossible (impossible_values)

    def record(self, spike: bool, readings: int = 1) -> int:
        """Spikes in the last SPIKE_WINDOW readings, this one counted (`readings` of them
        where a spike lasted more than one)."""
        self.judged += 1
        spikes = self.spikes
        if spike:
            spikes.extend([self.judged] * readings)
        elif not spikes:
            return 0
        while spikes and spikes[0] <= self.judged - SPIKE_WINDOW:
            spikes.popleft()
        return len(spikes)


def spiking(watches: dict[str, SpikeWatch], values: dict[str, float], baseline: Baseline,
            limits: dict[str, Any], impossible: Iterable[str] = ()) -> list[Finding]:
    """A transmitter that keeps spiking: the reading before this one stood far from its
    neighbours, by a share of them (a far larger one for SWINGING metrics) and by many
    times its own noise (vibration is ragged by nature), they agree among themselves,
    and this one is back (a step stays away, so it is no spike); a healthy
    one does that rarely, a failing one every few readings. A lone impossible reading
    (`impossible`: a winding read at 500 degC between two at 136) is one of its spikes
    too. Its values are then left out."""
    rule = limits["rules"]["sensor_fault"]
    plain, swinging, needed = rule["spike_ratio"], rule["swinging_spike_ratio"], rule["spikes"]
    findings = []
    for metric in impossible:
        watch = watches.get(metric)
        if watch is not None and not watch.out:  # a rail held is one fault, not many spikes
            watch.record(True)
            watch.out = True
    for metric, value in list(values.items()):
        watch = watches.get(metric)
        if watch is None:
            if metric == "head":
                continue
            watch = watches[metric] = SpikeWatch()
        watch.out = False
        readings = watch.readings
        if len(readings) < 5:
            readings.append(value)
            continue
        ratio = swinging if metric in SWINGING else plain
        last = readings[-1]
        if abs(last - value) <= 0.4 * ratio * abs(value) and not watch.spikes:
            # Most readings: near the last, so it was no spike, and none to count (cheap).
            readings.append(value)
            watch.judged += 1
            continue
        spike = abs(last - value) > 0.4 * ratio * abs(value)
        lasting = 1
        if spike:
            before = list(readings)[:-1]
            middle = statistics.median(before)
            share = ratio
            if last < middle and metric in SWINGING:
                # Down, the swinging share is reached as a ratio, to 1/(1 + share) of the
                # neighbours (a whole share down would read zero): half, for a current
                # below what its motor draws unloaded between two loaded readings.
                share = ratio / (1 + ratio)
            away = max(share * abs(middle), 8 * (baseline.sigma(metric) or 0.0), 1e-9)
            # ...from neighbours that agree among themselves (a ragged signal's do not).
            spread = statistics.median(abs(v - middle) for v in before)
            spike = abs(last - middle) > away and abs(value - middle) < away / 2 \
                and spread < away / 4
            # A glitch may hold for two readings (the one before last as far out, and the
            # reading before it back among the rest): both were spikes.
            lasting = 2 if spike and abs(before[-1] - middle) > away and \
                abs(before[-2] - middle) < away / 2 else 1
        readings.append(value)
        count = watch.record(spike, lasting)
        if count >= needed:
            findings.append(Finding("sensor_fault", 2, 0.8, {
                "metrics": {metric: {"value": value}}, "reason": "spikes",
                "spikes": count, "of_readings": min(watch.judged, SPIKE_WINDOW)},
                subject=metric))
            del values[metric]
            values.pop("head", None)
    return findings


def drifting(view: View, limits: dict[str, Any]) -> list[Finding]:
    """A transmitter drifting away from normal while every metric tied to it holds (TIED).
    Its values are then left out of the rest."""
    rule = limits["rules"]["sensor_fault"]
    findings = []
    ratios, drift, still = view.ratios, rule["drift_ratio"], rule["tied_still_ratio"]
    for metric, tied in TIED.items():
        ratio = ratios.get(metric)
        if ratio is None or abs(ratio - 1) <= drift:
            continue
        away = view.values[metric] - view.expectations[metric]
        if abs(away) < 8 * view.noise(metric):
            continue
        falling = ratio < 1 and not any(m in ratios for m in SAYS_ALONE.get(metric, ()))
        if falling:
            if metric == "motor_temp" and not view.temp_settled:
                continue
            tied += TIED_FALLING.get(metric, ())
        if not any(m in ratios for m in tied):
            continue
        if falling and "flow_rate" not in ratios:
            tied += ALSO_FALLING.get(metric, ())
        moved = max(still, TIED_SHARE * abs(ratio - 1))
        if any(abs(ratios[m] - 1) > moved for m in tied if m in ratios):
            continue
        follower = TIED_IN_UNITS.get(metric)
        if follower is not None:
            # It has not followed psi for psi: it moved the other way (the pump's side
            # moved it, not the tubing's), or the same way by at most a fifth.
            normal = at_this_frequency(view, follower)
            if normal is None or (view.values[follower] - normal) * math.copysign(
                    1.0, away) > TIED_SHARE * abs(away):
                continue
            tied += (follower,)
        findings.append(Finding("sensor_fault", 2, 0.75, {
            "metrics": view.show(metric, *tied), "reason": "drift",
            "tied_metrics_steady": [m for m in tied if m in view.ratios]}, subject=metric))
        del view.values[metric]
        del view.ratios[metric]
        derived = DERIVED_FROM.get(metric)
        if derived is not None:
            view.values.pop(derived, None)
            view.ratios.pop(derived, None)
    return findings


def at_this_frequency(view: View, metric: str) -> float | None:
    """A metric's normal at the present frequency. The discharge's is its learned level
    with its head part scaled by the affinity laws (∝ f², as the head is): the tubing's
    column and the wellhead's pressure above it do not follow the frequency, so a drive
    a little off its reference (within a setpoint step) moves only that part."""
    normal = view.expectations.get(metric)
    if metric != "discharge_pressure" or normal is None or "head" not in view.ratios:
        return normal if metric in view.values else None
    return normal + view.expectations["head"] - view.baseline.levels["head"].mean


def cooler_than_its_fluid(view: View, limits: dict[str, Any]) -> list[Finding]:
    """A running motor is cooled by the well's fluid flowing past it, and its losses heat
    it: its winding cannot read cooler than the fluid at the intake. When it does (by
    `temp_margin_degc` and several times both transmitters' noise), the one that moved
    away from its own normal is at fault (a winding reading low, an intake reading high).
    Its values are then left out of the rest."""
    values = view.values
    motor, intake = values.get("motor_temp"), values.get("intake_temp")
    if motor is None or intake is None:
        return []
    margin = max(limits["rules"]["sensor_fault"]["temp_margin_degc"],
                 4 * math.hypot(view.noise("motor_temp"), view.noise("intake_temp")))
    normal_motor = view.expectations.get("motor_temp")
    normal_intake = view.expectations.get("intake_temp")
    if motor >= intake - margin or normal_motor is None or normal_intake is None:
        return []
    subject = "motor_temp" if normal_motor - motor >= intake - normal_intake else "intake_temp"
    finding = Finding("sensor_fault", 2, 0.8, {
        "metrics": view.show("motor_temp", "intake_temp"),
        "reason": "winding cooler than the well fluid", "margin_degc": round(margin, 2)},
        subject=subject)
    del values[subject]
    view.ratios.pop(subject, None)
    return [finding]
