"""The built-in ESP rule set (`insa rules load-defaults`, and `make run`): equipment
protection from each well's own nameplate and operating data (shared/equipment.py),
or, where a well has none, relative to its own learned normal; and every critical
diagnosis.

No fleet-wide band: real wells span 20-110 A and 300-1,800 psi, so one textbook range
pages healthy wells. A protection rule judges a well by its own attributes; without
them, current, temperature and intake pressure are judged against the well's own
normal, and the two ranges (pump flow, drive frequency) skip it and list it in the
rule's status (`GET /rules`); its diagnoses still alert. Ranges clear inside a
narrower band and wait `for`, so a reading at a limit does not flap; a stopped pump
(a reading of 0) is left to diagnostics, not paged as out of range.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.alerting.rules import parse_rule, stored_form
from shared.contract import CRITICAL, WARNING
from shared.diagnosis.catalog import FAULT_CODES

BUILTIN = {"source": "builtin"}


def _attribute(name: str, factor: float = 1.0,
               otherwise: dict[str, float] | None = None) -> dict[str, Any]:
    """An equipment attribute times `factor`; `otherwise` (factor, offset): relative to the
    well's own normal where the device lacks the attribute."""
    limit: dict[str, Any] = {"attribute": name, "factor": factor}
    if otherwise:
        limit["otherwise"] = {"baseline": True, **otherwise}
    return limit


DEFAULT_RULES: list[dict[str, Any]] = [
    {"type": "threshold", "name": "ESP motor overload", "metric": "motor_current",
     "op": ">", "value": _attribute("motor_rated_current", 1.15, {"factor": 1.35}),
     "while_running": True, "severity": CRITICAL,
     # Three minutes: a start's inrush is not an overload; a motor overheats in minutes.
     "for_seconds": 180, "renotify_seconds": 3600, "labels": BUILTIN,
     "message": "{device_id}: motor current {value} A {threshold}"},
    {"type": "threshold", "name": "ESP motor over temperature", "metric": "motor_temp",
     "op": ">", "value": _attribute("motor_max_temp", otherwise={"offset": 40.0}),
     "severity": CRITICAL,
     "for_seconds": 60, "renotify_seconds": 3600, "labels": BUILTIN,
     "message": "{device_id}: motor temperature {value} degC {threshold}"},
    {"type": "threshold", "name": "ESP intake pressure below the pump's minimum",
     "metric": "pip", "op": "<",
     "value": _attribute("min_intake_pressure", otherwise={"factor": 0.4}),
     "severity": CRITICAL, "for_seconds": 120, "renotify_seconds": 3600,
     "labels": BUILTIN, "message": "{device_id}: intake pressure {value} psi {threshold}"},
    {"type": "range", "name": "ESP flow outside the pump's operating range",
     "metric": "flow_rate", "low": _attribute("pump_min_flow"),
     "high": _attribute("pump_max_flow"), "clear_low": _attribute("pump_min_flow", 1.05),
     "clear_high": _attribute("pump_max_flow", 0.95), "while_running": True,
     "severity": WARNING, "for_seconds": 300, "renotify_seconds": 3600, "labels": BUILTIN,
     "message": "{device_id}: flow {value} bbl/d is {threshold}"},
    {"type": "range", "name": "ESP VSD outside its configured range",
     "metric": "vsd_frequency", "low": _attribute("vsd_min_hz"),
     "high": _attribute("vsd_max_hz"), "while_running": True, "severity": WARNING,
     "for_seconds": 120, "renotify_seconds": 3600, "labels": BUILTIN,
     "message": "{device_id}: drive at {value} Hz is {threshold}"},
    {"type": "no_data", "name": "ESP silent", "after_seconds": 600, "severity": WARNING,
     "message": "{device_id}: no reading for {value} s", "labels": BUILTIN},
    *({"type": "diagnosis", "name": f"ESP diagnosis: {code}", "code": code,
       "min_severity": CRITICAL, "severity": CRITICAL, "renotify_seconds": 3600,
       "message": f"{{device_id}}: {code.replace('_', ' ')} diagnosed critical "
                  "(confidence {value})",
       "labels": BUILTIN}
      for code in FAULT_CODES),
]


async def load_defaults(conn: asyncpg.Connection, replace: bool = False) -> tuple[int, int]:
    """Add the built-in rules that are missing (by name); with `replace`, also reset the
    built-in ones an operator changed. Built-in rules of an earlier set that this one no
    longer has (the fleet-wide textbook bands) are disabled, their history kept. Returns
    (written, left as they were)."""
    written = 0
    async with conn.transaction():
        await conn.execute("UPDATE rules SET enabled = false, updated_at = now() "
                           "WHERE builtin AND enabled AND name <> ALL($1::text[])",
                           [r["name"] for r in DEFAULT_RULES])
        for data in DEFAULT_RULES:
            rule = parse_rule(data)
            status = await conn.execute(
                f"""
                INSERT INTO rules (name, enabled, definition, builtin)
                VALUES ($1, true, $2, true)
                ON CONFLICT (name) DO {'UPDATE SET definition = EXCLUDED.definition, '
                                       'updated_at = now() WHERE rules.builtin'
                                       if replace else 'NOTHING'}
                """, rule.name, stored_form(rule))
            written += int(status.split()[-1])
    return written, len(DEFAULT_RULES) - written
