"""The diagnosis engine: readings in, diagnosis events out. Pure (no I/O), one instance
per process; the diagnostics service, `insa diagnose` and the API's dry run
(`POST /diagnostics/analyze`) all drive it.

Per well it keeps a bounded state: the learned baseline, the last few readings, the
operating phase, and per diagnosis a short history of findings. A diagnosis is raised
when its condition holds in `confirm_readings` of the last `confirm_window` judged
readings (one spike raises nothing), changes severity the same way, and clears after
`clear_readings` judged readings without it. Only raises, changes and clears are events.

Phases: a stopped pump (drive at 0 Hz, or no current) is not judged, so a planned stop
raises nothing and clears nothing; after a start, inrush and drawdown are normal for
`startup_readings`/`startup_seconds`; a VSD setpoint step is followed by a settling
period after which the new operating point becomes the baseline.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from shared.diagnosis.catalog import SEVERITIES
from shared.diagnosis.causes import (
    explained,
    fold_symptoms_into_causes,
    one_hydraulic_cause,
    supersede,
    symptom_rank,
)
from shared.diagnosis.events import DiagnosisEvent, OpenDiagnosis, Reading
from shared.diagnosis.limits import LimitBook
from shared.diagnosis.pump_curve import intake_off_its_curve
from shared.diagnosis.sensors import (
    Key,
    anomalies,
    cooler_than_its_fluid,
    drifting,
    flatlines,
    impossible_values,
    sensors_reading_well,
    spiking,
)
from shared.diagnosis.signatures import (
    FAULT_CHECKS,
    bearing_wear,
    broken_shaft,
    quiet,
    usual_band,
    vsd_out_of_range,
)
from shared.diagnosis.state import Active, Tracker, WellState
from shared.diagnosis.view import Finding, View

NO_EQUIPMENT: dict[str, float] = {}
PER_SENSOR = ("sensor_fault", "anomaly")  # codes judged per metric, outside the fault checks


class DiagnosisEngine:
    def __init__(self, limits: LimitBook | None = None, max_devices: int = 100_000) -> None:
        self.limits = limits or LimitBook()
        self.max_devices = max_devices
        self.wells: OrderedDict[str, WellState] = OrderedDict()
        self.device_types: dict[str, str] = {}
        # Per device, its equipment's attributes (shared/equipment.py) where known.
        self.equipment: dict[str, dict[str, float]] = {}
        self.skipped = 0  # readings older than the device's last (repeats, late data)
        self._since_eviction = 0

    # --- the loop ------------------------------------------------------------------------
    def process(self, reading: Reading) -> list[DiagnosisEvent]:
        state = self.wells.get(reading.device_id)
        if state is None:
            state = self.wells[reading.device_id] = WellState(phase_since=reading.ts)
        else:
            self.wells.move_to_end(reading.device_id)
        if reading.ts <= state.last_ts:  # at-least-once stream, or late data: judged already
            self.skipped += 1
            return []
        limits = self.limits.for_device(reading.device_id,
                                        self.device_types.get(reading.device_id))
        operation = limits["operation"]
        elapsed = reading.ts - state.last_ts
        if elapsed > operation["gap_seconds"]:
            state.recent.clear()
            state.flat.clear()
            if state.judged:  # not the first sight: it may have stopped and started unseen
                state.load_changed = reading.ts
        state.last_ts = reading.ts
        findings, values = impossible_values(reading.values, limits)
        if "discharge_pressure" in values and "pip" in values:
            values["head"] = values["discharge_pressure"] - values["pip"]
        equipment = self.equipment.get(reading.device_id, NO_EQUIPMENT)
        phase = self._advance_phase(state, values, reading.ts, limits, equipment)
        if phase == "normal":
            impossible = [f.subject for f in findings if f.subject is not None]
            findings += flatlines(state.flat, state.baseline, values, limits)
            findings += spiking(state.spikes, values, state.baseline, limits, impossible)
        view = View(values, state.baseline, state.recent, limits["rules"], limits["ranges"],
                    frozenset(code for code, _ in state.active), equipment,
                    reading.ts - state.load_changed >= operation["temp_settle_seconds"])
        if phase == "normal":
            findings += cooler_than_its_fluid(view, limits)
            findings += drifting(view, limits)
            findings += intake_off_its_curve(view, limits)
            findings += sensors_reading_well(state.trackers, findings, values)
            if not quiet(view) or any(code not in PER_SENSOR for code, _ in state.trackers):
                findings += [f for check in FAULT_CHECKS if (f := check(view)) is not None]
            findings += anomalies(view, state.trackers, state.active, limits)
            one_hydraulic_cause(findings, state)
            fold_symptoms_into_causes(findings, state, operation["confirm_window"])
        elif phase == "settling":
            findings += [f for check in (broken_shaft, bearing_wear, vsd_out_of_range)
                         if (f := check(view)) is not None]
        elif phase == "warmup":
            finding = vsd_out_of_range(view)
            if finding is not None and finding.rank < 3:
                finding.rank = 0  # no learned operating point yet: only the hard limits
            findings += [finding] if finding is not None else []
        events = self._judge(reading, state, findings, limits)
        if phase in ("warmup", "normal", "settling"):
            if phase != "settling" and not any(a.rank >= 2 for a in state.active.values()):
                # The baseline's time constant is in hours, whatever the reading interval.
                alpha = min(1.0, elapsed / (operation["baseline_hours"] * 3600))
                state.baseline.learn(values, alpha, operation["warmup_readings"])
                state.learned += 1
            values["_t"] = reading.ts
            state.recent.append(values)
        self._evict(reading.ts, operation["idle_evict_seconds"])
        return events

    def process_all(self, readings: Iterable[Reading]) -> Iterable[DiagnosisEvent]:
        for reading in readings:
            yield from self.process(reading)

    # --- operating phase -----------------------------------------------------------------
    def _advance_phase(self, state: WellState, values: dict[str, float], ts: float,
                       limits: dict[str, Any], equipment: dict[str, float]) -> str:
        operation = limits["operation"]
        running = self._running(state, values, operation)
        if not running:
            if state.phase != "stopped":
                self._enter(state, "stopped", ts)
            return "stopped"
        if state.phase == "stopped":
            self._enter(state, "starting", ts)
            state.load_changed = ts
            state.recent.clear()  # the inrush is not what the pump normally does
            state.flat.clear()
        state.phase_readings += 1
        if state.phase == "starting":
            if state.phase_readings < operation["startup_readings"] or \
                    ts - state.phase_since < operation["startup_seconds"]:
                return "starting"
            self._enter(state, "normal" if state.learned >= operation["warmup_readings"]
                        else "warmup", ts)
            state.at_reference = ts  # started: the drive is at the operator's setpoint
        if state.phase == "warmup" and state.learned >= operation["warmup_readings"]:
            self._enter(state, "normal", ts)
        frequency, reference = values.get("vsd_frequency"), state.baseline.reference_hz
        if state.phase in ("normal", "warmup") and frequency is not None and \
                reference is not None:
            if abs(frequency - reference) <= operation["setpoint_step_hz"] / 3:
                state.at_reference = ts
            elif state.phase == "normal" and \
                    abs(frequency - reference) > operation["setpoint_step_hz"]:
                self._enter(state, "settling", ts)
        if state.phase == "settling":
            self._settle(state, values, ts, limits, equipment)
        return state.phase

    def _settle(self, state: WellState, values: dict[str, float], ts: float,
                limits: dict[str, Any], equipment: dict[str, float]) -> None:
        """Once the frequency has held still after a step, its operating point is normal.
        An operator's step (the drive ramps to it within `step_seconds`) may widen the
        well's usual band; a drift, however slow, moves only the reference."""
        operation = limits["operation"]
        needed = operation["settle_readings"]
        recent = [*list(state.recent)[-(needed - 1):], values] if needed > 1 else [values]
        frequencies = [r["vsd_frequency"] for r in recent if "vsd_frequency" in r]
        steady = len(frequencies) >= needed and \
            max(frequencies) - min(frequencies) <= operation["setpoint_step_hz"] / 2
        if state.phase_readings >= needed and steady:
            arrived = recent[0].get("_t", ts)
            stepped = arrived - state.at_reference <= operation["step_seconds"]
            state.baseline.rebase(recent, usual_band(state.baseline, equipment, limits)
                                  if stepped else (math.inf, -math.inf))
            state.at_reference = state.load_changed = ts
            self._enter(state, "normal", 0.0)

    @staticmethod
    def _enter(state: WellState, phase: str, ts: float) -> None:
        state.phase, state.phase_readings, state.phase_since = phase, 0, ts

    @staticmethod
    def _running(state: WellState, values: dict[str, float], operation: dict[str, Any]) -> bool:
        frequency = values.get("vsd_frequency")
        if frequency is not None:
            return frequency >= operation["running_min_hz"]
        current = values.get("motor_current")
        if current is None:
            return True  # nothing says it stopped
        normal = state.baseline.expected("motor_current", None)
        if normal is None:
            return current > 0.5
        return current >= operation["running_min_current_ratio"] * normal

    # --- raising, changing, clearing -------------------------------------------------------
    def _judge(self, reading: Reading, state: WellState, findings: list[Finding],
               limits: dict[str, Any]) -> list[DiagnosisEvent]:
        events: list[DiagnosisEvent] = []
        operation, rules = limits["operation"], limits["rules"]
        clear = operation["clear_readings"]
        state.judged += 1
        for finding in findings:
            if finding.rank and not finding.held and finding.subject is None:
                state.shown[finding.code] = state.judged
        # Causes whose signature showed (not merely held) within the confirmation window.
        showing = {code for code, at in state.shown.items()
                   if state.judged - at < operation["confirm_window"]}
        for finding in findings:
            key = (finding.code, finding.subject)
            tracker = state.trackers.get(key)
            if tracker is None and finding.rank == 0:
                continue  # nothing to remember about a condition that never showed
            # A code may confirm over more readings than the default (rules.<code>).
            rule = rules.get(finding.code, {})
            confirm = rule.get("confirm_readings", operation["confirm_readings"])
            if tracker is None:
                window = rule.get("confirm_window", operation["confirm_window"])
                tracker = state.trackers[key] = Tracker(deque(maxlen=window))
            tracker.ranks.append(finding.rank)
            active = state.active.get(key)
            if active is None:
                level = tracker.confirmed(confirm)
                if level and finding.subject is None and \
                        explained(state, finding, level, showing, reading.ts):
                    continue
                if level:
                    if finding.subject is None:  # the replaced ones clear first
                        level = max(level, symptom_rank(state, finding.code))
                        events += [self._event(reading, key, replaced, cleared=True)
                                   for key, replaced in supersede(state, finding.code)]
                    active = state.active[key] = Active(
                        level, finding.confidence, finding.evidence, reading.ts)
                    events.append(self._event(reading, key, active, cleared=False))
                elif finding.rank == 0 and not any(tracker.ranks):
                    del state.trackers[key]
                continue
            if finding.rank == 0:
                tracker.misses += 1
                if tracker.misses >= clear:
                    del state.active[key]
                    del state.trackers[key]
                    events.append(self._event(reading, key, active, cleared=True))
                    state.superseded = {old: by for old, by in state.superseded.items()
                                        if by != finding.code}
                continue
            tracker.misses = 0
            level = tracker.confirmed(confirm)
            last = list(tracker.ranks)[-clear:]
            if level > active.rank or (len(last) >= clear and 0 < max(last) < active.rank):
                active.rank = level if level > active.rank else max(last)
                active.confidence, active.evidence = finding.confidence, finding.evidence
                events.append(self._event(reading, key, active, cleared=False))
        return events

    @staticmethod
    def _event(reading: Reading, key: Key, active: Active, cleared: bool) -> DiagnosisEvent:
        code, metric = key
        return DiagnosisEvent(reading.device_id, reading.ts, code, SEVERITIES[active.rank - 1],
                              cleared, active.confidence, active.evidence, metric)

    # --- memory ----------------------------------------------------------------------------
    def _evict(self, now: float, idle_seconds: float) -> None:
        while len(self.wells) > self.max_devices:
            self.wells.popitem(last=False)
        self._since_eviction += 1
        if self._since_eviction < 10_000:
            return
        self._since_eviction = 0
        for device_id in [d for d, s in self.wells.items() if now - s.last_ts > idle_seconds]:
            del self.wells[device_id]

    def forget(self, device_id: str) -> None:
        self.wells.pop(device_id, None)

    def reset_diagnoses(self, device_id: str, open_diagnoses: list[OpenDiagnosis]) -> None:
        """Make the stored open diagnoses the device's active ones: after a restart the
        engine continues from what was emitted, so it neither raises them again nor
        forgets to clear them."""
        state = self.wells.get(device_id)
        if state is None:
            if not open_diagnoses:
                return
            state = self.wells[device_id] = WellState(phase_since=open_diagnoses[0].since)
        window = self.limits.for_device(device_id, self.device_types.get(device_id))[
            "operation"]["confirm_window"]
        state.active.clear()
        for code, metric, severity, confidence, evidence, since in open_diagnoses:
            rank = SEVERITIES.index(severity) + 1
            state.active[(code, metric)] = Active(rank, confidence, evidence, since)
            tracker = state.trackers.setdefault((code, metric), Tracker(deque(maxlen=window)))
            tracker.ranks.extend([rank] * (window - len(tracker.ranks)))
            tracker.misses = 0
