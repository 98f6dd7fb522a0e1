"""What each rule type says about one device's series: fire, clear, or hold.

A condition object lives per (rule, device) and keeps only what its rule needs (a
window, the active diagnoses). HOLD is neither: inside a range rule's hysteresis band,
or not enough data yet; it changes nothing. Pure: no I/O, no clock but the readings'.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Mapping
from enum import Enum

from shared.alerting.limits import Attribute, Baseline, bands_problem
from shared.alerting.rules import (
    CompareRule,
    DiagnosisRule,
    NoDataRule,
    RangeRule,
    RateOfChangeRule,
    Rule,
    ThresholdRule,
    WindowRule,
)
from shared.contract import SEVERITY_RANK

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne}


class Verdict(Enum):
    FIRE = "fire"
    CLEAR = "clear"
    HOLD = "hold"


HOLD = (Verdict.HOLD, None)
# A well's normal (RelativeThreshold): learned from this many readings, then followed
# over hours of event time, as the diagnosis baselines are.
NORMAL_WARMUP_READINGS = 30
NORMAL_TAU_SECONDS = 6 * 3600.0
Outcome = tuple[Verdict, float | None]  # and the value that decided it


def _compared(holds: bool, value: float) -> Outcome:
    return (Verdict.FIRE if holds else Verdict.CLEAR, value)


# After a start (a reading of 0, then not), inrush and drawdown are normal this long.
START_SETTLE_SECONDS = 1800.0


class Running:
    """Whether a `while_running` rule judges a reading: a reading of 0 is a stopped pump
    (meters read 0 with the motor off), and for `START_SETTLE_SECONDS` after a start the
    inrush and the annulus drawing down are normal. Neither fires nor holds an alert."""

    def __init__(self) -> None:
        self.started_at: float | None = None  # None: never seen stopped

    def judged(self, ts: float, value: float) -> bool:
        if value == 0:
            self.started_at = math.inf
            return False
        if self.started_at == math.inf:
            self.started_at = ts
        return self.started_at is None or ts - self.started_at >= START_SETTLE_SECONDS


class Threshold:
    def __init__(self, rule: ThresholdRule, limit: float) -> None:
        self.op, self.limit = OPS[rule.op], limit
        self.running = Running() if rule.while_running else None

    def observe(self, ts: float, value: float) -> Outcome:
        if self.running is not None and not self.running.judged(ts, value):
            return (Verdict.CLEAR, value)
        return _compared(self.op(value, self.limit), value)


class Normal:
    """A well's own normal of one metric: the mean of its first `warmup` readings, then an
    average over `tau_seconds` of event time. The caller does not teach it what breaks
    the rule (a fault is not normal) nor a stopped pump's zero."""

    def __init__(self, warmup: int = NORMAL_WARMUP_READINGS,
                 tau_seconds: float = NORMAL_TAU_SECONDS) -> None:
        self.warmup, self.tau = warmup, tau_seconds
        self.count, self.mean = 0, 0.0
        self.last_ts: float | None = None

    @property
    def value(self) -> float | None:
        return self.mean if self.count >= self.warmup else None

    def learn(self, ts: float, value: float) -> None:
        if self.count < self.warmup:
            self.count += 1
            self.mean += (value - self.mean) / self.count
        else:
            elapsed = 0.0 if self.last_ts is None else max(0.0, ts - self.last_ts)
            self.mean += (value - self.mean) * min(1.0, elapsed / self.tau)
        self.last_ts = ts


class RelativeThreshold:
    """A threshold relative to the well's own normal of the metric: nothing is judged until
    the normal is learned (its first readings), and it keeps learning while the rule
    does not hold."""

    def __init__(self, rule: ThresholdRule, baseline: Baseline) -> None:
        self.op = OPS[rule.op]
        self.running = Running() if rule.while_running else None
        self.factor, self.offset = baseline.factor, baseline.offset
        self.normal = Normal()

    def observe(self, ts: float, value: float) -> Outcome:
        if self.running is not None and not self.running.judged(ts, value):
            return (Verdict.CLEAR, value)
        normal = self.normal.value
        if normal is None:
            self.normal.learn(ts, value)
            return HOLD
        holds = self.op(value, normal * self.factor + self.offset)
        if not holds:
            self.normal.learn(ts, value)
        return _compared(holds, value)


class Range:
    def __init__(self, rule: RangeRule, bands: tuple[float, float, float, float]) -> None:
        self.low, self.high, self.clear_low, self.clear_high = bands
        self.running = Running() if rule.while_running else None

    def observe(self, ts: float, value: float) -> Outcome:
        if self.running is not None and not self.running.judged(ts, value):
            return (Verdict.CLEAR, value)
        if value < self.low or value > self.high:
            return (Verdict.FIRE, value)
        if self.clear_low <= value <= self.clear_high:
            return (Verdict.CLEAR, value)
        return (Verdict.HOLD, value)


class Unresolved:
    """A rule whose limits this device cannot give (it lacks an attribute, or its own
    give an empty band): nothing is judged, and `reason` says why (the rule's status)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def observe(self, ts: float, value: float) -> Outcome:
        return HOLD


class Window:
    """The values of the last `seconds`, with running sums and monotonic deques so each
    reading costs O(1) amortized whatever the window holds. Judged only once the series
    has been watched for a whole window (rebuilt from storage after a restart).

    The sums are of each value less a shift (a value of the window), so a steady series
    has a standard deviation of exactly 0 and large readings lose no precision; they are
    recomputed from the window once as many values have left it as it holds, so rounding
    never accumulates."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.points: deque[tuple[float, float]] = deque()
        self.mins: deque[tuple[float, float]] = deque()
        self.maxs: deque[tuple[float, float]] = deque()
        self.shift = self.total = self.squares = 0.0
        self.removed = 0
        self.first_ts: float | None = None

    def push(self, ts: float, value: float) -> None:
        if self.first_ts is None:
            self.first_ts, self.shift = ts, value
        self.points.append((ts, value))
        self._add(value, 1.0)
        while self.mins and self.mins[-1][1] >= value:
            self.mins.pop()
        self.mins.append((ts, value))
        while self.maxs and self.maxs[-1][1] <= value:
            self.maxs.pop()
        self.maxs.append((ts, value))
        horizon = ts - self.seconds
        while self.points[0][0] < horizon:
            self._add(self.points.popleft()[1], -1.0)
            self.removed += 1
        while self.mins[0][0] < horizon:
            self.mins.popleft()
        while self.maxs[0][0] < horizon:
            self.maxs.popleft()
        if self.removed >= len(self.points):
            self._recompute()

    def _add(self, value: float, sign: float) -> None:
        d = value - self.shift
        self.total += sign * d
        self.squares += sign * d * d

    def _recompute(self) -> None:
        self.shift, self.total, self.squares, self.removed = self.points[0][1], 0.0, 0.0, 0
        for _, value in self.points:
            self._add(value, 1.0)

    def full(self, ts: float) -> bool:
        return self.first_ts is not None and ts - self.first_ts >= self.seconds

    def stat(self, name: str) -> float:
        n = len(self.points)
        if name == "count":
            return float(n)
        if name == "min":
            return self.mins[0][1]
        if name == "max":
            return self.maxs[0][1]
        mean = self.total / n
        if name == "avg":
            return self.shift + mean
        return math.sqrt(max(0.0, self.squares / n - mean * mean))  # stddev (population)


class WindowStat:
    def __init__(self, rule: WindowRule) -> None:
        self.window = Window(rule.window_seconds)
        self.stat, self.op, self.limit = rule.stat, OPS[rule.op], rule.value

    def observe(self, ts: float, value: float) -> Outcome:
        self.window.push(ts, value)
        if not self.window.full(ts):
            return HOLD
        stat = self.window.stat(self.stat)
        return _compared(self.op(stat, self.limit), stat)


class RateOfChange:
    def __init__(self, rule: RateOfChangeRule) -> None:
        self.window = Window(rule.window_seconds)
        self.per, self.op, self.limit = rule.per_seconds, OPS[rule.op], rule.value

    def observe(self, ts: float, value: float) -> Outcome:
        self.window.push(ts, value)
        first_ts, first = self.window.points[0]
        if not self.window.full(ts) or ts <= first_ts:
            return HOLD
        rate = (value - first) / (ts - first_ts) * self.per
        return _compared(self.op(rate, self.limit), rate)


class Compare:
    """Left (this device's `metric`) against right (`other_metric` here, or a metric of
    `other_device_id`): the newest of each, judged whenever either moves, and only while
    both are within `max_age_seconds` of each other."""

    def __init__(self, rule: CompareRule) -> None:
        self.op, self.offset, self.max_age = OPS[rule.op], rule.offset, rule.max_age_seconds
        self.left: tuple[float, float] | None = None
        self.right: tuple[float, float] | None = None

    def set_side(self, left: bool, ts: float, value: float) -> None:
        if left:
            self.left = (ts, value)
        else:
            self.right = (ts, value)

    def judge(self) -> Outcome:
        """On the newest pair: the engine sets every side a reading moves, then judges
        once, so a reading that moves both is never judged half-updated."""
        if self.left is None or self.right is None or \
                abs(self.left[0] - self.right[0]) > self.max_age:
            return HOLD
        return _compared(self.op(self.left[1], self.right[1] + self.offset), self.left[1])


class NoData:
    """Fires on the engine's timer once the series has been silent `after_seconds`."""

    def __init__(self, rule: NoDataRule) -> None:
        self.after = rule.after_seconds
        self.last_seen: float | None = None

    def observe(self, ts: float, value: float) -> Outcome:
        if self.last_seen is not None and ts <= self.last_seen:
            return HOLD  # older than what was heard: says nothing about the silence now
        silent = 0.0 if self.last_seen is None else ts - self.last_seen
        self.last_seen = ts
        return (Verdict.CLEAR, round(silent, 1))

    def silence(self, now: float) -> Outcome:
        if self.last_seen is None:
            return HOLD  # never heard from: nothing to miss yet
        silent = now - self.last_seen
        return (Verdict.FIRE, round(silent, 1)) if silent >= self.after else HOLD


class DiagnosisMatch:
    """Active while any matching diagnosis (code, metric) stands at or above the rule's
    severity; the value is the highest confidence among them."""

    def __init__(self, rule: DiagnosisRule) -> None:
        self.code, self.min_rank = rule.code, SEVERITY_RANK[rule.min_severity]
        self.active: dict[tuple[str, str], float] = {}

    def observe_diagnosis(self, code: str, metric: str, severity: str, cleared: bool,
                          confidence: float) -> Outcome:
        if self.code != "*" and code != self.code:
            return HOLD
        if cleared or SEVERITY_RANK.get(severity, 0) < self.min_rank:
            self.active.pop((code, metric), None)
        else:
            self.active[(code, metric)] = confidence
        if self.active:
            return (Verdict.FIRE, max(self.active.values()))
        return (Verdict.CLEAR, confidence)


Condition = Threshold | RelativeThreshold | Range | WindowStat | RateOfChange | Compare | \
    NoData | DiagnosisMatch | Unresolved


def condition_for(rule: Rule, attributes: Mapping[str, float] | None = None) -> Condition:
    """The condition of `rule` for one device, its limits from the device's `attributes`."""
    attributes = attributes or {}
    match rule:
        case ThresholdRule():
            value = rule.value
            if isinstance(value, Attribute) and value.attribute not in attributes:
                if value.otherwise is None:
                    return Unresolved(f"no {value.attribute} attribute")
                return RelativeThreshold(rule, value.otherwise)
            if isinstance(value, Baseline):
                return RelativeThreshold(rule, value)
            limit = value if isinstance(value, float) else value.of(attributes)
            assert limit is not None
            return Threshold(rule, limit)
        case RangeRule():
            bands = rule.resolve(attributes)
            problem = bands_problem(bands)
            if problem is not None or isinstance(bands, str):
                return Unresolved(problem or str(bands))
            return Range(rule, bands)
        case WindowRule():
            return WindowStat(rule)
        case RateOfChangeRule():
            return RateOfChange(rule)
        case CompareRule():
            return Compare(rule)
        case NoDataRule():
            return NoData(rule)
        case DiagnosisRule():
            return DiagnosisMatch(rule)
    raise TypeError(f"no condition for {type(rule).__name__}")
