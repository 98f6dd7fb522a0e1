"""Per-metric findings: transmitters that read the impossible or stick at one value
(sensor_fault), and readings far outside the well's own range (anomaly, info only)."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from services.diagnostics.baseline import Baseline
from services.diagnostics.view import Finding, View

NOT_ANOMALOUS = ("vsd_frequency",)  # a setpoint, not a measurement of the well
# Readings that can hold at exactly 0 in a running well (no flow when dead-headed, an
# empty intake when pumped off): a run of zeros there is no stuck transmitter.
TRUE_ZEROS = ("flow_rate", "pip")
Key = tuple[str, str | None]  # (code, metric for per-sensor codes)


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
    moving = sum(1 for m, v in values.items() if m != "head" and flat.get(m, (None,))[0] != v)
    findings = []
    for metric, value in list(values.items()):
        previous, count = flat.get(metric, (None, 0))
        count = count + 1 if previous == value else 1
        flat[metric] = (value, count)
        if count < needed or metric == "head" or (value == 0 and metric in TRUE_ZEROS):
            continue
        level = baseline.levels.get(metric)
        required = level.repeats_for_flatline(needed) if level is not None else None
        if required is not None and count >= required and moving:
            findings.append(Finding("sensor_fault", 2, 0.85, {
                "metrics": {metric: {"value": value}}, "reason": "flatline",
                "identical_readings": count}, subject=metric))
            del values[metric]  # a stuck value says nothing about the well
    return findings


def sensors_reading_well(watched: Iterable[Key], faulty: list[Finding],
                         values: dict[str, float]) -> list[Finding]:
    """Sensors under watch that read plausibly again (towards clearing their fault)."""
    judged = {f.subject for f in faulty}
    return [Finding("sensor_fault", 0, subject=metric)
            for code, metric in watched
            if code == "sensor_fault" and metric in values and metric not in judged]


def anomalies(view: View, watched: Container[Key], active: Container[Key],
              limits: dict[str, Any]) -> list[Finding]:
    """Per metric, a z-score against the well's own level and its noise."""
    rule = limits["rules"]["anomaly"]
    raise_z, clear_z = rule["raise_z"], rule["clear_z"]
    findings = []
    for metric, value in view.values.items():
        expected = view.expectations.get(metric)
        if expected is None or metric in NOT_ANOMALOUS:
            continue
        sigma = view.baseline.sigma(metric) or 0.0
        score = (value - expected) / sigma if sigma else 0.0
        key = ("anomaly", metric)
        if abs(score) > raise_z or (key in active and abs(score) > clear_z):
            findings.append(Finding("anomaly", 1, round(min(0.95, abs(score) / 10), 2), {
                "metrics": view.show(metric), "score": round(score, 2),
                "expected_range": [round(expected - 3 * sigma, 3),
                                   round(expected + 3 * sigma, 3)]}, subject=metric))
        elif key in watched:
            findings.append(Finding("anomaly", 0, subject=metric))
    return findings
