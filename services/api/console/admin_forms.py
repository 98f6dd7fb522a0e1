"""What the admin pages (devices, users, API keys, audit) share: a posted form as the text
the API's pydantic models are built from, the API's refusals as messages at the fields
they concern, and where a browser goes after a write.

The pages never check input themselves: they build the API's own body model and call the
API's own route function, so a form refuses exactly what the API refuses, with the same
words. This module only places those words next to the right input.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from services.api.console.rendering import render
from services.api.security.principal import Principal
from shared.errors import Conflict, ValidationFailed

FORM = "form"  # an error that belongs to no one field: shown above the form
Errors = dict[str, str]


class Refused(Exception):
    """Several inputs refused at once: what the form itself could not read (JSON that is
    not) beside what the model refused, so one submission shows every mistake."""

    def __init__(self, errors: Errors) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


REFUSALS = (ValidationError, ValidationFailed, Conflict, Refused)


async def posted(request: Request) -> dict[str, str]:
    """The form's text fields (the CSRF token left out), the last value of a name where it
    has several (a checkbox after its hidden "false"); files are not expected here."""
    found = await request.form()
    return {k: v for k, v in found.items() if isinstance(v, str) and k != "csrf_token"}


def refusal(exc: Exception, default: str = FORM) -> tuple[int, Errors]:
    """(status, errors by field) for a refusal of the API's: 422 for invalid input, 409
    for a conflict. `default` is the field a refusal that names none is about."""
    if isinstance(exc, ValidationError):
        return 422, pydantic_errors(exc, default)
    if isinstance(exc, Refused):
        return 422, exc.errors
    if isinstance(exc, ValidationFailed):
        field = exc.field or default
        return 422, {field: exc.message.removeprefix(f"{field}: ")}
    if isinstance(exc, Conflict):
        return 409, {default: exc.message}
    raise exc


def pydantic_errors(exc: ValidationError, default: str = FORM) -> Errors:
    """pydantic's errors keyed by the form's field names: `attributes.vsd_max_hz` for a
    nested model's field; a list item's error at the list (`tags`), naming the item; a
    model's own check (`Value error, ...`) at the model's field."""
    found: Errors = {}
    for error in exc.errors():
        names = [str(p) for p in error["loc"] if not isinstance(p, int)]
        message = str(error["msg"]).removeprefix("Value error, ")
        if any(isinstance(p, int) for p in error["loc"]):
            message = f"{error['input']!r}: {message}"
        found.setdefault(".".join(names) or default, message)
    return found


def split_words(text: str) -> list[str]:
    """A list field typed as words separated by commas, spaces or lines."""
    return [w for w in text.replace(",", " ").split() if w]


def utc_moment(text: str) -> datetime | str | None:
    """A `datetime-local` input, read as UTC (the pages show every time in UTC); anything
    else is handed on as text for the model to refuse at its field."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def see_other(url: str) -> Response:
    """After a write that shows no secret: the page to look at, by GET (a reload does not
    post again)."""
    return RedirectResponse(url, 303)


def confirm(request: Request, who: Principal, section: str, title: str, text: str,
            button: str, action: str, back: str, danger: bool = True) -> Response:
    """The step before a write that cuts something off: what will happen, a button that
    posts to `action`, and the way `back`."""
    return render(request, "admin_confirm.html", {
        "section": section, "title": title, "text": text, "button": button,
        "danger": danger, "action": action, "back": back}, who)


def context(values: dict[str, Any], errors: Errors | None = None,
            fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What a form template reads: the values to show again, the errors by field, and
    (`other_errors`) those of no input of the form's `fields`, shown above it so that no
    refusal goes unsaid."""
    errors = errors or {}
    return {"values": values, "errors": errors,
            "other_errors": [m for k, m in errors.items() if k not in fields]}
