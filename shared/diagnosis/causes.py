"""One developing failure, one diagnosis: which of a well's findings are diagnoses of their
own, and which are symptoms or evidence of another (docs/architecture.md, "Diagnostics")."""

from __future__ import annotations

from shared.diagnosis.sensors import Key
from shared.diagnosis.signatures import HYDRAULIC
from shared.diagnosis.state import Active, WellState
from shared.diagnosis.view import Finding


def one_hydraulic_cause(findings: list[Finding], state: WellState) -> None:
    """A pump has one hydraulic failure at a time: where signatures overlap, the more
    severe wins, then one whose signature shows in full over one only held because it was
    diagnosed before, then the one already diagnosed, then the surest."""
    present = [f for f in findings if f.code in HYDRAULIC and f.rank]
    if len(present) < 2:
        return
    best = max(present, key=lambda f: (f.rank, not f.held, (f.code, None) in state.active,
                                       f.confidence))
    for finding in present:
        if finding is not best:
            finding.rank = 0


# Symptom -> what explains it: a hydraulic failure unloads the motor, takes its cooling
# flow, and gas slugging shakes the pump; an overload heats the motor.
SYMPTOM_CAUSES = {"underload": HYDRAULIC, "overheating": (*HYDRAULIC, "overload"),
                  "bearing_wear": ("gas_lock",)}
CAUSES = frozenset(c for causes in SYMPTOM_CAUSES.values() for c in causes)


def _note(active: Active, key: str, code: str) -> None:
    found = active.evidence.setdefault(key, [])
    if code not in found:
        found.append(code)


def _related(code: str, other: str) -> bool:
    """Two whole-well diagnoses taken for one developing failure: a pump has one at a time
    (two hydraulic failures, a symptom and its cause, or two symptoms of an unseen cause).
    A VSD out of its range is a setting, related to nothing."""
    return code != other and "vsd_out_of_range" not in (code, other)


def fold_symptoms_into_causes(findings: list[Finding], state: WellState, window: int) -> None:
    """Symptoms of a cause that shows (or did within the confirmation window, as causes
    take as long to confirm as their symptoms) are its evidence, not diagnoses of their
    own. A critical temperature or vibration, or one already diagnosed, still is."""
    for code in state.since_cause:
        state.since_cause[code] += 1
    for finding in findings:
        if finding.code in CAUSES and finding.rank:
            state.since_cause[finding.code] = 0
    for code, _ in state.active:
        if code in CAUSES:
            state.since_cause[code] = 0
    for finding in findings:
        causes = SYMPTOM_CAUSES.get(finding.code)
        own = finding.code in ("overheating", "bearing_wear") and (
            finding.rank >= 3 or (finding.code, None) in state.active)
        if causes is None or own or \
                not any(state.since_cause.get(c, window) < window for c in causes):
            continue
        if finding.rank:
            for cause in findings:
                if cause.code in causes and cause.rank:
                    cause.evidence.setdefault("symptoms", []).append(finding.code)
        finding.rank = 0


def explained(state: WellState, finding: Finding, level: int, showing: set[str],
               ts: float) -> bool:
    """Whether `finding`, confirmed at `level` by the reading at `ts`, is not raised as a
    diagnosis of its own: it was superseded by a diagnosis still standing, it is a
    symptom of a cause diagnosed and still showing, or a related diagnosis stands at a
    higher severity or was raised by this same reading (then it is that one's evidence;
    the standing one keeps its own severity, so the two never flap)."""
    by = state.superseded.get(finding.code)
    if by is not None and (by, None) in state.active:
        return True
    for cause in SYMPTOM_CAUSES.get(finding.code, ()):
        # A hydraulic failure explains its symptoms for sure; an overload is as often a
        # hot motor taken for one, so overheating replaces it instead.
        active = state.active.get((cause, None))
        if active is not None and cause in showing and cause in HYDRAULIC:
            _note(active, "symptoms", finding.code)
            return True
    for (other, metric), active in state.active.items():
        # Never a downgrade, and never two raised by one reading (the first stands); but
        # a cause found is never held back by its symptom (it replaces it: `supersede`).
        if metric is None and _related(finding.code, other) and \
                finding.code not in SYMPTOM_CAUSES.get(other, ()) and \
                (active.rank > level or active.since == ts):
            _note(active, "also_showing", finding.code)
            return True
    return False


def symptom_rank(state: WellState, code: str) -> int:
    """The highest severity standing among the symptoms `code` explains: a cause that
    replaces them raises at least at it, so an operator never sees a page downgraded."""
    return max((active.rank for (other, metric), active in state.active.items()
                if metric is None and code in SYMPTOM_CAUSES.get(other, ())), default=0)


def supersede(state: WellState, code: str) -> list[tuple[Key, Active]]:
    """One developing failure, one diagnosis: a whole-well diagnosis just raised clears
    the related ones standing (none is more severe: `explained`), saying so, and they
    are not raised again while it stands. An operator never sees two live diagnoses of
    one failure. Returns what it cleared, with `superseded_by` in its evidence."""
    cleared = []
    for key, active in list(state.active.items()):
        other, metric = key
        if metric is not None or not _related(code, other):
            continue
        del state.active[key]
        state.trackers.pop(key, None)
        # What `other` held back, `code` now holds back: no chain of re-raises.
        state.superseded = {old: code if by == other else by
                            for old, by in state.superseded.items()}
        state.superseded[other] = code
        active.evidence = {**active.evidence, "superseded_by": code}
        cleared.append((key, active))
    return cleared
