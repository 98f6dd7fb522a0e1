"""A drifting intake-pressure transmitter, told by the pump's own curve.

The intake pressure does move alone in a healthy well (the annulus fills and is drawn
down for hours), so it is not judged by `sensors.drifting`. But the pump sits between it
and the discharge: at one frequency its curve ties the head it makes (discharge less
intake) to the flow it lifts. A real change of the intake pressure either moves the
discharge with it (the head holds: a flat curve, or a column that follows) or changes
the head, and then the flow moves along the curve. An intake reading far from its normal
while the discharge has not followed it, so that the head worked out from it is far from this well's
own at this frequency (learned while it was settled and healthy, scaled by the affinity
laws), and the flow has not moved as that head would need, is its transmitter drifting.
"""

from __future__ import annotations

import statistics
from typing import Any

from shared.diagnosis.sensors import TIED_SHARE, at_this_frequency
from shared.diagnosis.view import Finding, View

# How steeply a centrifugal pump's head may fall with its flow where it is run, relative
# (|d ln H / d ln Q|). For H ∝ s² - (Q/Qmax)² it is 2x²/(1 - x²) at x = Q/Qmax: 0.7 at
# half of open flow, 1.9 at 70 % (near best efficiency), 8.5 at 90 %. A real change of
# the head moves the flow by at least the head's share over this.
STEEPEST_CURVE = 8.0
# A discharge that moved by this share of the intake's departure followed it.
FOLLOWED = 0.5
# Readings whose medians are compared (one noisy reading says little of a percent).
READINGS = 7
MEDIAN_NOISE = 0.5  # a median of READINGS readings scatters about 1.25/sqrt(7) as much


def recent(view: View, metric: str) -> list[tuple[float, float | None]]:
    """The metric's last READINGS readings, each with the frequency it was read at."""
    return [(values[metric], values.get("vsd_frequency"))
            for values in [*list(view.recent)[-(READINGS - 1):], view.values]
            if metric in values]


def recent_flow_ratio(view: View) -> float | None:
    """The flow over the last READINGS readings against its normal at their
    frequencies: their median."""
    expected = view.baseline.expected
    ratios = [flow / normal for flow, hz in recent(view, "flow_rate")
              if (normal := expected("flow_rate", hz))]
    return statistics.median(ratios) if len(ratios) >= READINGS else None


def intake_off_its_curve(view: View, limits: dict[str, Any]) -> list[Finding]:
    """An intake pressure drifting while the discharge, the flow and the current hold
    (module docstring). Its values, and the head worked out from them, are then left
    out of the rest."""
    rule = limits["rules"]["sensor_fault"]
    ratios, values, expected = view.ratios, view.values, view.expectations
    ratio = ratios.get("pip")
    if ratio is None or abs(ratio - 1) <= rule["drift_ratio"] or not all(
            m in ratios for m in ("flow_rate", "discharge_pressure", "head")):
        return []
    away = values["pip"] - expected["pip"]
    discharge = at_this_frequency(view, "discharge_pressure")
    if discharge is None or abs(away) < 8 * view.noise("pip"):
        return []
    # The discharge has not followed the intake (by half, over the last readings): the
    # head worked out from them has changed by at least half the intake's departure.
    followed = statistics.median(d for d, _ in recent(view, "discharge_pressure")) - \
        discharge
    if abs(followed) > FOLLOWED * abs(away):
        return []
    # How far the flow must have moved along the curve for that head: beyond the noise
    # of its meter's median (about half a reading's), or the meter cannot say it has not.
    along = abs((followed - away) / expected["head"]) / STEEPEST_CURVE
    flow = recent_flow_ratio(view)
    if flow is None or along < MEDIAN_NOISE * view.noise("flow_rate") / \
            expected["flow_rate"] or abs(flow - 1) > along:
        return []
    current = ratios.get("motor_current")
    if current is not None and abs(current - 1) > max(rule["tied_still_ratio"],
                                                      TIED_SHARE * abs(ratio - 1)):
        return []
    tied = ("discharge_pressure", "flow_rate", "motor_current")
    finding = Finding("sensor_fault", 2, 0.75, {
        "metrics": view.show("pip", "head", *tied), "reason": "drift",
        "tied_metrics_steady": [m for m in tied if m in ratios]}, subject="pip")
    for metric in ("pip", "head"):
        del values[metric]
        del ratios[metric]
    return [finding]
