"""Vocabulary of the diagnosis and alert contracts (docs/payloads.md, docs/diagnosis.md)
that several services speak: the severities, in rising order. (The diagnosis codes are
shared/diagnosis/catalog.py's.) The database's CHECK constraints (migrations 0007, 0009)
hold the same three words."""

from __future__ import annotations

from typing import Literal, get_args

# A raised condition: what the health score and the fleet view count as a problem.
Raised = Literal["warning", "critical"]
Severity = Literal["info", Raised]  # the one list; everything below is derived from it

SEVERITIES: tuple[Severity, ...] = get_args(Severity)
RAISED: tuple[Raised, ...] = get_args(Raised)
INFO, WARNING, CRITICAL = SEVERITIES
SEVERITY_RANK: dict[str, int] = {s: rank for rank, s in enumerate(SEVERITIES, start=1)}
