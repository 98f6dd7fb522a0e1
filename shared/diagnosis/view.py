"""One reading of a running pump next to what this well normally does (View), what a
check concludes from it (Finding), and the evidence and confidence a finding carries."""

from __future__ import annotations

import itertools
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from shared.diagnosis.baseline import Baseline

HYSTERESIS = 0.25


@dataclass(slots=True)
class Finding:
    code: str
    rank: int  # 0 absent, 2 warning, 3 critical (1: info, for anomalies)
    confidence: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None  # the metric, for per-sensor codes
    held: bool = False  # present only because it was already diagnosed (not raisable now)


@dataclass(slots=True)
class View:
    """One reading of a running pump, next to what this well normally does."""

    values: dict[str, float]
    baseline: Baseline
    recent: deque[dict[str, float]]
    rules: dict[str, Any]
    ranges: dict[str, Any]
    active: frozenset[str] = frozenset()
    equipment: dict[str, float] = field(default_factory=dict)  # shared/equipment.py
    # The winding has had `temp_settle_seconds` since its load last changed (a start, a
    # settled setpoint step) to reach its temperature: a few thermal time constants.
    temp_settled: bool = True
    expectations: dict[str, float] = field(init=False)
    ratios: dict[str, float] = field(init=False)
    _ragged: dict[str, float | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Worked out once per reading: every check asks for them.
        self.expectations = self.baseline.expectations(self.values.get("vsd_frequency"))
        self.ratios = {m: v / e for m, v in self.values.items()
                       if (e := self.expectations.get(m)) is not None and e > 1e-9}

    @property
    def frequency(self) -> float | None:
        return self.values.get("vsd_frequency")

    def expected(self, metric: str) -> float | None:
        return self.expectations.get(metric)

    def ratio(self, metric: str) -> float | None:
        return self.ratios.get(metric)

    def raggedness(self, metric: str) -> float | None:
        """How ragged the metric is (the amp chart's ragged line): the median size of its
        second differences over the last nine readings, in its own unit. A ramp or a step
        is not ragged, nor one spike (it spoils three of the seven differences, and the
        median takes the fourth); a value jumping up and down is."""
        if metric in self._ragged:
            return self._ragged[metric]
        recent = self.recent
        values = [recent[i][metric] for i in range(max(0, len(recent) - 8), len(recent))
                  if metric in recent[i]]
        if metric in self.values:
            values.append(self.values[metric])
        result = None if len(values) < 7 else statistics.median(
            abs(c - 2 * b + a) for a, b, c in zip(values, values[1:], values[2:], strict=False))
        self._ragged[metric] = result
        return result

    def resolution(self, metric: str) -> float:
        """The smallest step between consecutive readings over the last nine: a coarse
        transmitter's resolution (one reading stepping through whole amperes on a ramp is
        no ragged line); about 0 for a fine one."""
        recent = self.recent
        values = [recent[i][metric] for i in range(max(0, len(recent) - 8), len(recent))
                  if metric in recent[i]]
        if metric in self.values:
            values.append(self.values[metric])
        steps = [abs(b - a) for a, b in itertools.pairwise(values) if b != a]
        return min(steps, default=0.0)

    def change(self, metric: str) -> float | None:
        """How far the metric has moved over the recent readings, in its own unit: the
        median of the newest third less that of the oldest third (a spike moves
        neither). None with fewer than nine readings."""
        recent = self.recent
        values = [r[metric] for r in recent if metric in r]
        if metric in self.values:
            values.append(self.values[metric])
        if len(values) < 9:
            return None
        third = len(values) // 3
        return statistics.median(values[-third:]) - statistics.median(values[:third])

    def noise(self, metric: str) -> float:
        return self.baseline.sigma(metric) or 0.0

    def eased(self, code: str, threshold: float, toward: float) -> float:
        """A threshold moved part of the way back to normal while `code` is active, so a
        value hovering at it does not raise and clear over and over (hysteresis)."""
        if code not in self.active:
            return threshold
        return threshold + HYSTERESIS * (toward - threshold)

    def show(self, *metrics: str) -> dict[str, Any]:
        """Evidence: each metric's value, its expected value here, and their ratio."""
        shown: dict[str, Any] = {}
        for metric in metrics:
            value = self.values.get(metric)
            if value is None:
                continue
            entry: dict[str, Any] = {"value": round(value, 3)}
            expected = self.expected(metric)
            if expected is not None:
                entry["baseline"] = round(expected, 3)
                if abs(expected) > 1e-9:
                    entry["ratio"] = round(value / expected, 3)
            shown[metric] = entry
        return shown

    def rise(self, metric: str) -> float | None:
        """How far the metric is above its normal here, in its own unit."""
        value, expected = self.values.get(metric), self.expected(metric)
        return None if value is None or expected is None else value - expected

    def beyond_limit(self, metric: str, high: bool) -> bool:
        """Past the absolute critical limit, where this well normally sits well inside it."""
        limit = self.ranges.get(metric, {}).get("critical", [None, None])[1 if high else 0]
        value, expected = self.values.get(metric), self.baseline.expected(metric, None)
        if limit is None or value is None or expected is None:
            return False
        if high:
            return value > limit and expected < 0.9 * limit
        return value < limit and expected > 1.1 * limit

    def slope_per_hour(self, metric: str) -> float | None:
        points = [(r["_t"], r[metric]) for r in self.recent if metric in r]
        if len(points) < 4 or points[-1][0] - points[0][0] <= 0:
            return None
        t0 = points[0][0]
        xs = [(t - t0) / 3600 for t, _ in points]
        ys = [v for _, v in points]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx \
            if sxx else None


def _missing(view: View, *metrics: str) -> list[str]:
    return [m for m in metrics if m not in view.values]


def evidence(view: View, shown: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    evidence: dict[str, Any] = {"metrics": view.show(*shown)}
    missing = _missing(view, *shown)
    if missing:
        evidence["not_checked"] = missing
    evidence.update({k: v for k, v in extra.items() if v is not None})
    return evidence


def confidence(satisfied: int, available: int, total: int) -> float:
    """More agreeing signals, and fewer missing ones, make a surer diagnosis."""
    if available == 0:
        return 0.0
    agreement = satisfied / available
    coverage = available / total
    return round(min(0.98, 0.45 + 0.35 * agreement + 0.2 * coverage), 2)


def round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
