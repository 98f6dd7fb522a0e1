"""What goes into the engine (a reading) and what comes out (a diagnosis event)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.diagnosis.catalog import CODES, action_for
from shared.timefmt import utc_text


@dataclass(slots=True)
class Reading:
    device_id: str
    ts: float  # epoch seconds
    values: dict[str, float]  # canonical units


class OpenDiagnosis(NamedTuple):
    """A diagnosis standing as stored (open_diagnoses): what a restarted engine continues
    from."""

    code: str
    metric: str | None  # per-sensor codes only
    severity: str
    confidence: float
    evidence: dict[str, Any]
    since: float  # epoch seconds


@dataclass(slots=True)
class DiagnosisEvent:
    device_id: str
    ts: float
    code: str
    severity: str
    cleared: bool
    confidence: float
    evidence: dict[str, Any]
    metric: str | None = None

    @property
    def name(self) -> str:
        return CODES[self.code].name

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device_id": self.device_id, "ts": utc_text(self.ts), "code": self.code,
            "name": self.name, "severity": self.severity, "cleared": self.cleared,
            "confidence": self.confidence, "evidence": self.evidence,
            "action": action_for(self.code, self.severity)}
        if self.metric is not None:
            out["metric"] = self.metric
        return out

