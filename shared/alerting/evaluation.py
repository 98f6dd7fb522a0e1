"""The alert engine's core: rules indexed by metric and scope, one condition per
(rule, device), and the lifecycle of open alerts, as transitions for the store.

Pure (no I/O): the live service persists the transitions (store.py) and the backtest
(backtest.py) only collects them, so both evaluate exactly alike.

Lifecycle: a condition that holds opens a *pending* alert that fires once it has held
for the rule's `for` (by the readings' event time, or by the timer in `tick`), or fires
at once without one. A clear cancels a pending alert and resolves a firing or
acknowledged one. Late data: per (device, metric) a value at or before the newest one
evaluated is skipped, so an old reading neither starts, fires nor clears an alert. A
shelved alert (a person put it aside until `shelved_until`) is neither re-notified nor
escalated; when the shelf ends and it is still open, the timer announces it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from shared.alerting.conditions import (
    Compare,
    Condition,
    DiagnosisMatch,
    NoData,
    Outcome,
    RateOfChange,
    Unresolved,
    Verdict,
    WindowStat,
    condition_for,
)
from shared.alerting.limits import uses_attributes
from shared.alerting.rules import (
    CompareRule,
    DiagnosisRule,
    NoDataRule,
    Rule,
)

Key = tuple[int, str]  # (rule id, device id)
# An alert's state, as stored (alerts.state, alert_events.state) and sent; an open alert
# is in one of the first three.
AlertState = Literal["pending", "firing", "acknowledged", "resolved"]
# A transition of the engine's (alert_events.kind, but a cancelled alert, a pending one
# whose condition cleared, is deleted: never announced). `unshelved`: a shelf ended.
TransitionKind = Literal["pending", "firing", "renotify", "escalated", "resolved", "cancelled",
                         "unshelved"]
SHELF_ENDED = "the shelf ended"  # the note of the engine's unshelved event
ANY_METRIC = ""
LEFT, RIGHT = True, False


@dataclass(slots=True)
class OpenAlert:
    rule_id: int
    device_id: str
    state: AlertState  # pending, firing, acknowledged
    severity: str
    active_since: float
    fire_at: float
    value: float | None = None
    fired_at: float | None = None
    last_notified_at: float | None = None
    escalated: bool = False
    id: int | None = None  # set once stored
    shelved_until: float | None = None  # set by a person (store.shelve), read from the row


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    alert: OpenAlert
    before: AlertState | None  # the state the store expects the row in; None: a new row
    at: float
    value: float | None
    severity: str
    message: str
    note: str | None = None
    threshold: str = ""  # the rule's, as an operator reads it
    notified_before: float | None = None  # renotify: the notice it follows


@dataclass(frozen=True, slots=True)
class Device:
    device_type: str | None = None
    tags: frozenset[str] = frozenset()
    # Its equipment's nameplate and operating data (shared/equipment.py), for rules whose
    # limits come from them.
    attributes: Mapping[str, float] = field(default_factory=dict)


NO_DEVICE = Device()


@dataclass(frozen=True, slots=True)
class Watch:
    """A rule that a (device, metric) value feeds, and which device's condition it is."""
    rule_id: int
    rule: Rule
    target: str
    left: bool = LEFT


@dataclass
class Engine:
    rules: dict[int, Rule] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    open: dict[Key, OpenAlert] = field(default_factory=dict)
    conditions: dict[Key, Condition] = field(default_factory=dict)
    progress: dict[tuple[str, str], float] = field(default_factory=dict)
    late: int = 0  # values skipped as at or before the newest evaluated
    moved: dict[tuple[str, str], float] = field(default_factory=dict)  # progress to store
    _by_metric: dict[str, list[tuple[int, Rule, bool]]] = field(default_factory=dict)
    _other_device: dict[tuple[str, str], list[tuple[int, CompareRule]]] = \
        field(default_factory=dict)
    _diagnosis_rules: list[tuple[int, DiagnosisRule]] = field(default_factory=list)
    _watches: dict[tuple[str, str], list[Watch]] = field(default_factory=dict)

    # --- rules and devices -------------------------------------------------------------
    def set_rules(self, rules: dict[int, Rule], now: float) -> list[Transition]:
        """Replace the rule set (enabled rules only). A changed rule starts its conditions
        afresh; open alerts of a rule now gone or disabled are resolved."""
        for rule_id, rule in self.rules.items():
            if rules.get(rule_id) != rule:
                for key in [k for k in self.conditions if k[0] == rule_id]:
                    del self.conditions[key]
        self.rules = dict(rules)
        self._by_metric.clear()
        self._other_device.clear()
        self._diagnosis_rules.clear()
        self._watches.clear()
        for rule_id, rule in rules.items():
            if isinstance(rule, DiagnosisRule):
                self._diagnosis_rules.append((rule_id, rule))
            elif isinstance(rule, NoDataRule):
                self._by_metric.setdefault(rule.metric or ANY_METRIC, []).append(
                    (rule_id, rule, LEFT))
            else:
                self._by_metric.setdefault(rule.metric, []).append((rule_id, rule, LEFT))
                if isinstance(rule, CompareRule):
                    if rule.other_device_id is not None:
                        self._other_device.setdefault(
                            (rule.other_device_id, rule.right_metric), []).append((rule_id, rule))
                    else:
                        self._by_metric.setdefault(rule.right_metric, []).append(
                            (rule_id, rule, RIGHT))
        return self._end_unwatched(now)

    def set_device(self, device_id: str, device: Device, now: float) -> list[Transition]:
        """A device's type or tags (what scopes match); its open alerts of rules whose
        scope it has left end."""
        if self.devices.get(device_id) == device:
            return []
        self.devices[device_id] = device
        for watched in [k for k in self._watches if k[0] == device_id]:
            del self._watches[watched]
        for key in [k for k in self.conditions if k[1] == device_id
                    and uses_attributes(self.rules.get(k[0]))]:
            del self.conditions[key]  # its limits come from attributes that may have changed
        return self._end_unwatched(now, device_id)

    def _end_unwatched(self, now: float, device_id: str | None = None) -> list[Transition]:
        """End the open alerts no rule watches any more: the rule is gone or disabled, or
        the device is out of its scope. A pending one is cancelled, as never announced."""
        out: list[Transition] = []
        for key, alert in list(self.open.items()):
            if device_id is not None and key[1] != device_id:
                continue
            rule = self.rules.get(key[0])
            device = self.devices.get(key[1])
            if rule is None:
                note = "rule disabled or deleted"
            elif device is not None and \
                    not rule.scope.matches(key[1], device.device_type, device.tags):
                note = "device out of the rule's scope"
            else:
                continue
            del self.open[key]
            kind: TransitionKind = "cancelled" if alert.state == "pending" else "resolved"
            out.append(Transition(kind, alert, alert.state, now, alert.value, alert.severity,
                                  f"rule {key[0]} on {key[1]}: {note}", note=note))
        return out

    def watches(self, device_id: str, metric: str) -> list[Watch]:
        """The rules a value of `metric` from this device feeds (cached per pair)."""
        found = self._watches.get((device_id, metric))
        if found is None:
            device = self.devices.get(device_id, Device())
            found = [Watch(rule_id, rule, device_id, left)
                     for name in (metric, ANY_METRIC)
                     for rule_id, rule, left in self._by_metric.get(name, ())
                     if rule.scope.matches(device_id, device.device_type, device.tags)]
            found += [Watch(rule_id, rule, rule.scope.device_id or "", RIGHT)
                      for rule_id, rule in self._other_device.get((device_id, metric), ())]
            self._watches[(device_id, metric)] = found
        return found

    # --- evaluation --------------------------------------------------------------------
    def observe_reading(self, device_id: str, ts: float, metrics: dict[str, float]
                        ) -> list[Transition]:
        out: list[Transition] = []
        compared: dict[Key, tuple[Rule, Compare]] = {}  # judged once all sides are set
        for metric, value in metrics.items():
            if not self._advance(device_id, metric, ts):
                continue
            for watch in self.watches(device_id, metric):
                condition = self.condition(watch.rule_id, watch.rule, watch.target)
                if isinstance(condition, Compare):
                    condition.set_side(watch.left, ts, value)
                    compared[(watch.rule_id, watch.target)] = (watch.rule, condition)
                else:
                    outcome = condition.observe(ts, value)  # type: ignore[union-attr]
                    self._step(watch.rule_id, watch.rule, watch.target, outcome, ts, out)
        for (rule_id, target), (rule, compare) in compared.items():
            self._step(rule_id, rule, target, compare.judge(), ts, out)
        return out

    def observe_diagnosis(self, device_id: str, ts: float, code: str, metric: str,
                          severity: str, cleared: bool, confidence: float,
                          superseded_by: str | None = None) -> list[Transition]:
        """`superseded_by`: the diagnosis that replaced a cleared one (diagnostics holds one
        per developing failure); an alert it resolves says so in its note."""
        out: list[Transition] = []
        if not self._diagnosis_rules or \
                not self._advance(device_id, f"diagnosis:{code}:{metric}", ts):
            return out
        device = self.devices.get(device_id, Device())
        for rule_id, rule in self._diagnosis_rules:
            if rule.scope.matches(device_id, device.device_type, device.tags):
                condition = self.condition(rule_id, rule, device_id)
                assert isinstance(condition, DiagnosisMatch)
                outcome = condition.observe_diagnosis(code, metric, severity, cleared,
                                                      confidence)
                self._step(rule_id, rule, device_id, outcome, ts, out)
        if superseded_by is not None:
            note = f"{code.replace('_', ' ')} superseded by diagnosis " \
                   f"{superseded_by.replace('_', ' ')}"
            out = [replace(t, note=note) if t.kind in ("resolved", "cancelled") else t
                   for t in out]
        return out

    def prime(self, device_id: str, metric: str, points: Iterable[tuple[float, float]]
              ) -> None:
        """Feed stored history to the conditions that keep any (windows, the newest
        values, last seen) without judging it: rebuilding state after a restart."""
        points = list(points)
        for watch in self.watches(device_id, metric):
            condition = self.condition(watch.rule_id, watch.rule, watch.target)
            for ts, value in points:
                if isinstance(condition, WindowStat | RateOfChange):
                    condition.window.push(ts, value)
                elif isinstance(condition, Compare):
                    condition.set_side(watch.left, ts, value)
                elif isinstance(condition, NoData):
                    condition.observe(ts, value)

    def tick(self, now: float) -> list[Transition]:
        """Time-based conditions: silence, `for` elapsed, escalation, re-notify."""
        out: list[Transition] = []
        for (rule_id, device_id), condition in list(self.conditions.items()):
            if isinstance(condition, NoData):
                self._step(rule_id, self.rules[rule_id], device_id, condition.silence(now),
                           now, out)
        for alert in list(self.open.values()):
            rule = self.rules[alert.rule_id]  # set_rules and adopt keep only rules run here
            if alert.state == "pending" and now >= alert.fire_at:
                self._fire(rule, alert, now, out)
            if alert.shelved_until is not None:
                # Put aside by a person: no repeat, no escalation. Once the shelf ends the
                # alert is announced again, and re-notify counts from then; an escalation
                # that came due meanwhile follows on the next tick.
                if now >= alert.shelved_until:
                    out.append(self._unshelve(rule, alert, now))
                continue
            if alert.state != "firing" or alert.fired_at is None:
                continue
            if rule.escalation is not None and not alert.escalated and \
                    now - alert.fired_at >= rule.escalation.after_seconds:
                alert.escalated = True
                alert.severity = rule.escalation.severity
                alert.last_notified_at = now
                out.append(self._transition("escalated", rule, alert, "firing", now))
            elif rule.renotify_seconds is not None and \
                    now - (alert.last_notified_at or alert.fired_at) >= rule.renotify_seconds:
                before, alert.last_notified_at = alert.last_notified_at, now
                out.append(self._transition("renotify", rule, alert, "firing", now, before))
        return out

    def adopt(self, key: Key, alert: OpenAlert | None) -> None:
        """Take the stored truth for a key after the store refused a transition (another
        replica or a person changed the alert first)."""
        if alert is None or alert.rule_id not in self.rules:
            self.open.pop(key, None)  # (a rule this engine does not run: not its to judge)
        else:
            self.open[key] = alert

    # --- internals ---------------------------------------------------------------------
    def _advance(self, device_id: str, source: str, ts: float) -> bool:
        key = (device_id, source)
        last = self.progress.get(key)
        if last is not None and ts <= last:
            self.late += 1
            return False
        self.progress[key] = self.moved[key] = ts
        return True

    def take_progress(self) -> dict[tuple[str, str], float]:
        """The progress moved since the last call, for the store."""
        moved, self.moved = self.moved, {}
        return moved

    def condition(self, rule_id: int, rule: Rule, device_id: str) -> Condition:
        key = (rule_id, device_id)
        condition = self.conditions.get(key)
        if condition is None:
            condition = self.conditions[key] = condition_for(
                rule, self.devices.get(device_id, NO_DEVICE).attributes)
        return condition

    def skipped(self) -> dict[Key, str]:
        """(rule, device) pairs judged nothing, and why (a missing attribute)."""
        return {key: c.reason for key, c in self.conditions.items()
                if isinstance(c, Unresolved)}

    def _step(self, rule_id: int, rule: Rule, device_id: str, outcome: Outcome, ts: float,
              out: list[Transition]) -> None:
        verdict, value = outcome
        if verdict is Verdict.HOLD:
            return
        key = (rule_id, device_id)
        alert = self.open.get(key)
        if verdict is Verdict.FIRE:
            if alert is None:
                alert = self.open[key] = OpenAlert(
                    rule_id, device_id, "pending", rule.severity, active_since=ts,
                    fire_at=ts + rule.for_seconds, value=value)
                if rule.for_seconds > 0:
                    out.append(self._transition("pending", rule, alert, None, ts))
                    return
                self._fire(rule, alert, ts, out, before=None)
                return
            alert.value = value
            if alert.state == "pending" and ts >= alert.fire_at:
                self._fire(rule, alert, ts, out)
        elif alert is not None:
            del self.open[key]
            alert.value = value
            kind: TransitionKind = "cancelled" if alert.state == "pending" else "resolved"
            out.append(self._transition(kind, rule, alert, alert.state, ts))

    def _unshelve(self, rule: Rule, alert: OpenAlert, at: float) -> Transition:
        alert.shelved_until = None
        if alert.state == "firing":
            alert.last_notified_at = at
        return replace(self._transition("unshelved", rule, alert, alert.state, at),
                       note=SHELF_ENDED)

    def _fire(self, rule: Rule, alert: OpenAlert, at: float, out: list[Transition],
              before: AlertState | None = "pending") -> None:
        alert.state = "firing"
        alert.fired_at = alert.last_notified_at = at
        out.append(self._transition("firing", rule, alert, before, at))

    @staticmethod
    def _transition(kind: TransitionKind, rule: Rule, alert: OpenAlert,
                    before: AlertState | None, at: float,
                    notified_before: float | None = None) -> Transition:
        state: AlertState = "resolved" if kind in ("resolved", "cancelled") else alert.state
        return Transition(kind, alert, before, at, alert.value, alert.severity,
                          rule.render(alert.device_id, alert.value, state, alert.severity),
                          threshold=rule.threshold, notified_before=notified_before)
