"""The built-in ESP rule set: the critical limits of DESIGN.md §9 and every critical
diagnosis (`insa rules load-defaults`, and `make run`).

Textbook limits fit the textbook well; a healthy well may sit outside them, which is
what the diagnostics service's own baselines are for. Range rules clear inside a
narrower band and wait `for` two minutes, so a reading at a limit does not flap; a
planned stop (zero current and frequency) is left to diagnostics, not paged here.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.alerts.rules import parse_rule, stored_form
from shared.contract import DIAGNOSIS_CODES

FOR = 120.0


def _range(name: str, metric: str, low: float, high: float, clear: tuple[float, float],
           unit: str) -> dict[str, Any]:
    return {"type": "range", "name": name, "metric": metric, "low": low, "high": high,
            "clear_low": clear[0], "clear_high": clear[1], "severity": "critical",
            "for_seconds": FOR, "renotify_seconds": 3600,
            "message": f"{{device_id}}: {metric} {{value}} {unit} is {{threshold}}",
            "labels": {"source": "builtin"}}


def _above(name: str, metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"type": "threshold", "name": name, "metric": metric, "op": ">", "value": value,
            "severity": "critical", "for_seconds": FOR, "renotify_seconds": 3600,
            "message": f"{{device_id}}: {metric} {{value}} {unit} {{threshold}}",
            "labels": {"source": "builtin"}}


DEFAULT_RULES: list[dict[str, Any]] = [
    _range("ESP flow rate out of range", "flow_rate", 500, 3500, (550, 3400), "bbl/d"),
    _range("ESP intake pressure out of range", "pip", 600, 1400, (650, 1350), "psi"),
    _range("ESP motor current out of range", "motor_current", 30, 70, (32, 68), "A"),
    _range("ESP VSD frequency out of range", "vsd_frequency", 45, 65, (46, 64), "Hz"),
    _above("ESP motor temperature critical", "motor_temp", 100, "degC"),
    _above("ESP vibration critical", "vibration", 3.0, "mm/s"),
    _above("ESP gas-oil ratio critical", "gor", 1000, "scf/bbl"),
    {"type": "no_data", "name": "ESP silent", "after_seconds": 600, "severity": "warning",
     "message": "{device_id}: no reading for {value} s", "labels": {"source": "builtin"}},
    *({"type": "diagnosis", "name": f"ESP diagnosis: {code}", "code": code,
       "min_severity": "critical", "severity": "critical", "renotify_seconds": 3600,
       "message": f"{{device_id}}: {code.replace('_', ' ')} diagnosed critical "
                  "(confidence {value})",
       "labels": {"source": "builtin"}}
      for code in DIAGNOSIS_CODES if code != "anomaly"),
]


async def load_defaults(conn: asyncpg.Connection, replace: bool = False) -> tuple[int, int]:
    """Add the built-in rules that are missing (by name); with `replace`, also reset the
    built-in ones an operator changed. Returns (written, left as they were)."""
    written = 0
    async with conn.transaction():
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
