"""The alarms list's reading: its filters (held in the URL), and pages of alerts from the
API's own `list_alerts` (services/api/routes/alerts.py), so visibility, validation and the
rows are exactly `GET /api/v1/alerts`'.

Two orders. "Newest first" is the API's (by when the condition began) with its cursor.
"Most severe first" (the default: what an operator looks at first) walks the severities
from critical down, each newest first, through the same function filtered to one
severity; its cursor is `<severity>.<the API's cursor within it>`, so a page stays keyed
(no offsets) while alerts come and go.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import asyncpg
from fastapi import Depends, Query

from services.api.deps import Resources
from services.api.routes.alerts import Alert, list_alerts
from services.api.security.principal import Principal
from shared.alerting.evaluation import AlertState
from shared.contract import SEVERITIES, Severity
from shared.errors import ValidationFailed

PAGE_SIZE = 50
OPEN: list[AlertState] = ["pending", "firing", "acknowledged"]
STATES: dict[str, list[AlertState] | None] = {
    "open": OPEN, "pending": ["pending"], "firing": ["firing"],
    "acknowledged": ["acknowledged"], "resolved": ["resolved"], "all": None}
MOST_SEVERE_FIRST: tuple[Severity, ...] = tuple(reversed(SEVERITIES))
Order = Literal["severity", "newest"]
RULES = """SELECT id, name FROM rules
            WHERE $1::text IS NULL OR definition -> 'scope' ->> 'device_id' IS NULL
               OR definition -> 'scope' ->> 'device_id' = $1
            ORDER BY name, id"""


@dataclass(frozen=True)
class Filters:
    state: str = "open"
    severity: Severity | None = None
    device: str | None = None
    rule: int | None = None
    shelved: bool | None = None
    order: Order = "severity"

    def query(self, **extra: str | None) -> str:
        """This filter (and `extra`) as a query string, defaults and empty values left
        out, so the address of the usual view stays /console/alarms."""
        found: dict[str, Any] = {}
        defaults = asdict(Filters())
        for key, value in {**asdict(self), **extra}.items():
            if value is None or value == "" or value == defaults.get(key):
                continue
            found[key] = str(value).lower() if isinstance(value, bool) else value
        return urlencode(found)


async def filters(state: Annotated[str | None, Query(pattern=f"^(|{'|'.join(STATES)})$")] = None,
            severity: Annotated[Severity | Literal[""] | None, Query()] = None,
            device: Annotated[str | None, Query(max_length=128)] = None,
            rule: Annotated[str | None, Query(pattern=r"^\d{0,18}$")] = None,
            shelved: Annotated[Literal["", "true", "false"] | None, Query()] = None,
            order: Annotated[Order | Literal[""] | None, Query()] = None) -> Filters:
    # A form without scripts sends its empty boxes and selects as "": no filter.
    return Filters(state or "open", severity or None, (device or "").strip() or None,
                   int(rule) if rule else None, None if not shelved else shelved == "true",
                   order or "severity")


Filtered = Annotated[Filters, Depends(filters)]
Cursor = Annotated[str | None, Query(max_length=512)]


async def alarm_page(res: Resources, who: Principal, chosen: Filters, cursor: str | None
                     ) -> tuple[list[Alert], str | None]:
    """A page of alerts and the cursor of the next one (None: this is the last)."""
    async def page(severities: list[Severity] | None, after: str | None, limit: int
                   ) -> tuple[list[Alert], str | None]:
        found = await list_alerts(res, who, state=STATES[chosen.state], severity=severities,
                                  device_id=chosen.device, rule_id=chosen.rule,
                                  shelved=chosen.shelved, cursor=after, limit=limit)
        return found.items, found.next_cursor

    if chosen.order == "newest":
        return await page([chosen.severity] if chosen.severity else None, cursor, PAGE_SIZE)
    walk = [s for s in MOST_SEVERE_FIRST if chosen.severity in (None, s)]
    start, after = split_cursor(cursor, walk)
    items: list[Alert] = []
    for severity in walk[walk.index(start):]:
        wanted = PAGE_SIZE - len(items)
        if wanted == 0:  # the page is full: does a later severity have any?
            if (await page([severity], None, 1))[0]:
                return items, f"{severity}."
            continue
        found, more = await page([severity], after, wanted)
        items += found
        after = None
        if more:
            return items, f"{severity}.{more}"
    return items, None


def split_cursor(cursor: str | None, walk: list[Severity]) -> tuple[Severity, str | None]:
    """(the severity a page starts at, the API's cursor within it)."""
    if not cursor:
        return walk[0], None
    severity, _, after = cursor.partition(".")
    for known in walk:
        if known == severity:
            return known, after or None
    raise ValidationFailed("bad_cursor", "cursor: not one of this page's", field="cursor")


async def rule_choices(pool: asyncpg.Pool, who: Principal) -> list[asyncpg.Record]:
    """The rules the filter offers by name (those this principal's rules list shows)."""
    return await pool.fetch(RULES, who.device_id)
