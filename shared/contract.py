"""Vocabulary of the diagnosis and alert contracts (docs/payloads.md, docs/diagnosis.md)
that several services speak: severities, in rising order, and the diagnosis codes."""

from __future__ import annotations

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}

DIAGNOSIS_CODES = ("gas_lock", "pump_off", "broken_shaft", "closed_valve", "overload",
                   "underload", "overheating", "bearing_wear", "vsd_out_of_range",
                   "sensor_fault", "anomaly")
