"""The audit trail, for admins: newest first, filtered by actor, action (a prefix, so
`device.` is every device action), subject, outcome and time range, 100 a page with an
"older" link keyed by entry id (stable while new entries arrive), each entry's detail
shown as indented JSON.

The entries are the API's (`GET /api/v1/audit`, services/api/routes/audit_log.py), read by
calling its route function: the page shows exactly what the API answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.api.console.admin_forms import Errors, utc_moment
from services.api.console.rendering import render
from services.api.console.session import PATH, ConsoleUser
from services.api.deps import Res, authorize
from services.api.routes import audit_log as api_audit

BASE = PATH + "/audit"
PERMISSION = "audit:read"
PAGE_SIZE = 100
OUTCOMES = ("success", "failure")
router = APIRouter(prefix=BASE, include_in_schema=False)
Text = Annotated[str, Query(max_length=200)]


@dataclass(frozen=True)
class Filters:
    """As typed in the page's form (empty: no filter); the URL holds them."""

    actor: str = ""
    action: str = ""
    subject: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""

    def query(self, **extra: str | None) -> str:
        return urlencode({k: v for k, v in {**asdict(self), **extra}.items() if v})


async def filters(actor: Text = "", action: Annotated[str, Query(max_length=64)] = "",
            subject: Text = "", outcome: Annotated[str, Query(max_length=16)] = "",
            since: Annotated[str, Query(max_length=32)] = "",
            until: Annotated[str, Query(max_length=32)] = "") -> Filters:
    return Filters(actor.strip(), action.strip(), subject.strip(), outcome, since.strip(),
                   until.strip())


def checked(chosen: Filters) -> tuple[dict[str, Any], Errors]:
    """The API's arguments for `chosen`, and what in it is not acceptable, by field."""
    errors: Errors = {}
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        moment = utc_moment(getattr(chosen, name))
        if isinstance(moment, str):
            errors[name] = "not a date and time (YYYY-MM-DDTHH:MM, UTC)"
            moment = None
        moments[name] = moment
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and until <= since:
        errors["until"] = "must be after “from”"
    if chosen.outcome and chosen.outcome not in OUTCOMES:
        errors["outcome"] = f"one of {', '.join(OUTCOMES)}"
    return {"actor": chosen.actor or None, "action_prefix": chosen.action or None,
            "subject": chosen.subject or None, "outcome": chosen.outcome or None,
            "since": since, "until": until}, errors


@router.get("")
async def audit_page(request: Request, res: Res, who: ConsoleUser,
                     chosen: Annotated[Filters, Depends(filters)],
                     cursor: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    await authorize(res, who, PERMISSION, request)
    arguments, errors = checked(chosen)
    entries: list[tuple[api_audit.AuditEntry, str]] = []
    next_cursor = None
    if not errors:
        page = await api_audit.audit_entries(res, who, cursor=cursor or None,
                                             limit=PAGE_SIZE, **arguments)
        entries = [(e, readable(e.detail)) for e in page.items]
        next_cursor = page.next_cursor
    return render(request, "audit_admin.html", {
        "entries": entries, "chosen": chosen, "errors": errors, "outcomes": OUTCOMES,
        "newest_url": f"{BASE}?{chosen.query()}" if cursor else None,
        "older_url": f"{BASE}?{chosen.query(cursor=next_cursor)}" if next_cursor else None},
        who, status=422 if errors else 200)


def readable(detail: dict[str, Any]) -> str:
    """An entry's detail as indented JSON, keys sorted; empty when it has none."""
    return json.dumps(detail, indent=2, ensure_ascii=False, sort_keys=True) if detail else ""
