"""The alarms' actions form: one note, a shelf's length, and a button per action, turned
into the API's own bodies (NoteIn, ShelveIn) and handed to the API's own route functions
(services/api/routes/alerts.py), so the store's state checks, the actor, the note, the
audit row and the engines' notice are those of `POST /api/v1/alerts/{id}/<action>`.

A refusal is placed at the form's input it concerns: the note, the shelf's length
(`period`) or its end (`until`); a conflict with the alert's state (409: acknowledging a
resolved alert, unshelving one that is not shelved) at the action's buttons (`action`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from services.api.console.admin_forms import pydantic_errors, utc_moment
from services.api.deps import Resources
from services.api.routes import alerts as api
from services.api.security.principal import Principal
from shared.errors import Conflict, ValidationFailed

Action = Literal["acknowledge", "resolve", "shelve", "unshelve"]
UNTIL = "until"  # the period that means "until the date and time given"
# (value, label) of the shelf's lengths offered; the API's bounds still apply.
PERIODS = (("15", "15 min"), ("60", "1 h"), ("240", "4 h"), ("480", "8 h"),
           ("1440", "24 h"), (UNTIL, "until…"))
DEFAULT_PERIOD = "60"
DONE = {"acknowledge": "Acknowledged", "resolve": "Resolved", "shelve": "Shelved",
        "unshelve": "Unshelved"}
NoteAction = Callable[[int, Resources, Principal, api.NoteIn | None], Awaitable[api.Alert]]
NOTE_ACTIONS: dict[str, NoteAction] = {
    "acknowledge": api.acknowledge_alert, "resolve": api.resolve_alert,
    "unshelve": api.unshelve_alert}


@dataclass
class ActionForm:
    """What the form shows again: what was typed, the refusals by input, and after a
    change, which one was done."""

    values: dict[str, str] = field(default_factory=lambda: {"period": DEFAULT_PERIOD})
    errors: dict[str, str] = field(default_factory=dict)
    done: str | None = None
    status: int = 200


def offered(alert: api.Alert) -> list[Action]:
    """The actions the alert's state allows (the store refuses the others with 409)."""
    if alert.state == "resolved":
        return []
    found: list[Action] = []
    if alert.state == "firing":
        found.append("acknowledge")
    if alert.state in ("firing", "acknowledged"):
        found.append("shelve")
    if alert.shelved_until is not None:
        found.append("unshelve")
    return [*found, "resolve"]


def shelve_body(values: dict[str, str], note: str | None) -> api.ShelveIn:
    """`period` minutes, or with period `until` the `until` input read as UTC. Both given
    (a length chosen and a date typed) go to the API as both, which refuses them."""
    period = values.get("period", "").strip()
    return api.ShelveIn.model_validate({
        "minutes": None if period == UNTIL else period or None,
        "until": utc_moment(values.get("until", "").strip()), "note": note})


def where(name: str, values: dict[str, str]) -> str:
    """The form's input that the API's field `name` is."""
    if name == "minutes":
        return "until" if values.get("period") == UNTIL else "period"
    return name if name in ("note", "until") else "action"


async def act(res: Resources, who: Principal, alert_id: int, action: Action,
              values: dict[str, str]) -> tuple[api.Alert | None, ActionForm]:
    """Do `action` as `who`; (the alert after it, or None and the form with the refusal)."""
    note = values.get("note", "").strip() or None
    form = ActionForm(values)
    try:
        if action == "shelve":
            changed = await api.shelve_alert(alert_id, res, who, shelve_body(values, note))
        else:
            body = api.NoteIn.model_validate({"note": note})
            changed = await NOTE_ACTIONS[action](alert_id, res, who, body)
    except ValidationError as exc:
        form.errors = {where(k, values): m for k, m in pydantic_errors(exc, "action").items()}
        form.status = 422
        return None, form
    except ValidationFailed as exc:
        name = where(exc.field or "action", values)
        form.errors = {name: exc.message.removeprefix(f"{exc.field}: ")}
        form.status = 422
        return None, form
    except Conflict as exc:
        form.errors = {"action": exc.message}
        form.status = 409
        return None, form
    return changed, ActionForm(done=DONE[action])
