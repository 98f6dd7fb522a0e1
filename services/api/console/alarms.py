"""The alarms page: every open alert across the fleet (alarm_list.py), filtered, in keyed
pages, its rows on screen refreshed every few seconds as one request; one alert's page
with what happened to it and who did it; and the people's actions on both
(alarm_actions.py): acknowledge, resolve, shelve and unshelve, each with a note.

Reading needs alerts:read, acting alerts:manage (checked again on every POST, whatever
the page offered). From the list, an action answers its own row (htmx swaps it in place,
with a refusal at its input and the form left open); from the alert's page, the page.
Without scripts, a form posts as any form does and a change goes back by 303 to where it
came from, so a reload does not post it again."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.api.console.admin_forms import posted
from services.api.console.alarm_actions import PERIODS, Action, ActionForm, act, offered
from services.api.console.alarm_list import (
    MOST_SEVERE_FIRST,
    STATES,
    Cursor,
    Filtered,
    Filters,
    alarm_page,
    rule_choices,
)
from services.api.console.rendering import is_htmx, render
from services.api.console.session import PATH as CONSOLE
from services.api.console.session import ConsoleUser, safe_next
from services.api.deps import Res, Resources, authorize
from services.api.routes.alerts import Alert, get_alert
from services.api.security.principal import Principal

PATH = CONSOLE + "/alarms"
router = APIRouter(prefix=PATH, include_in_schema=False)
REFRESH_SECONDS = 10
READ, MANAGE = "alerts:read", "alerts:manage"
From = Literal["list", "detail"]
# What the actions form reads besides the alert and its own state.
FORM_CONTEXT: dict[str, Any] = {"offered": offered, "periods": PERIODS, "blank": ActionForm()}


def shared_context(chosen: Filters, cursor: str | None) -> dict[str, Any]:
    """What the rows need, on the page and in its refresh: where they are read again and
    where a change made from them comes back to without scripts."""
    return {"refresh": REFRESH_SECONDS, **FORM_CONTEXT, "forms": {},
            "rows_url": f"{PATH}/rows?{chosen.query(cursor=cursor)}",
            "back": f"{PATH}?{chosen.query(cursor=cursor)}".rstrip("?")}


@router.get("")
async def alarms_page(request: Request, res: Res, who: ConsoleUser, chosen: Filtered,
                      cursor: Cursor = None) -> Response:
    await authorize(res, who, READ, request)
    alerts, next_cursor = await alarm_page(res, who, chosen, cursor)
    return render(request, "alarms.html", {
        "alerts": alerts, "chosen": chosen, "states": list(STATES),
        "severities": MOST_SEVERE_FIRST, "rules": await rule_choices(res.pool, who),
        "first_url": f"{PATH}?{chosen.query()}".rstrip("?") if cursor else None,
        "next_url": f"{PATH}?{chosen.query(cursor=next_cursor)}" if next_cursor else None,
        **shared_context(chosen, cursor)}, who)


@router.get("/rows")
async def alarm_rows(request: Request, res: Res, who: ConsoleUser, chosen: Filtered,
                     cursor: Cursor = None) -> Response:
    """The rows on screen again (the page's live refresh): the same filter and cursor."""
    await authorize(res, who, READ, request)
    alerts, _ = await alarm_page(res, who, chosen, cursor)
    return render(request, "_alarm_rows.html", {
        "alerts": alerts, **shared_context(chosen, cursor)}, who)


@router.get("/{alert_id:int}")
async def alarm_page_of(request: Request, res: Res, who: ConsoleUser,
                        alert_id: int) -> Response:
    await authorize(res, who, READ, request)
    return await detail(request, res, who, alert_id, ActionForm())


async def detail(request: Request, res: Resources, who: Principal, alert_id: int,
                 form: ActionForm) -> Response:
    alert = await get_alert(alert_id, res, who)  # NotFound: the 404 page
    return render(request, "alarm.html", {"a": alert, "form": form, **FORM_CONTEXT}, who,
                  status=form.status)


async def change(request: Request, res: Res, who: Principal, alert_id: int,
                 action: Action) -> Response:
    await authorize(res, who, READ, request)
    await authorize(res, who, MANAGE, request)
    values = await posted(request)
    source: From = "list" if values.get("from") == "list" else "detail"
    back = safe_next(values.get("next") or PATH) if source == "list" else f"{PATH}/{alert_id}"
    changed, form = await act(res, who, alert_id, action, values)
    htmx = is_htmx(request)
    if htmx and source == "list":
        alert: Alert = changed or await get_alert(alert_id, res, who)
        return render(request, "_alarm_row.html", {
            "a": alert, "forms": {alert_id: form}, "back": back, **FORM_CONTEXT}, who,
            status=form.status)
    if changed is not None and not htmx:
        return RedirectResponse(back, 303)
    return await detail(request, res, who, alert_id, form)


@router.post("/{alert_id:int}/acknowledge")
async def acknowledge(request: Request, res: Res, who: ConsoleUser, alert_id: int) -> Response:
    return await change(request, res, who, alert_id, "acknowledge")


@router.post("/{alert_id:int}/resolve")
async def resolve(request: Request, res: Res, who: ConsoleUser, alert_id: int) -> Response:
    return await change(request, res, who, alert_id, "resolve")


@router.post("/{alert_id:int}/shelve")
async def shelve(request: Request, res: Res, who: ConsoleUser, alert_id: int) -> Response:
    return await change(request, res, who, alert_id, "shelve")


@router.post("/{alert_id:int}/unshelve")
async def unshelve(request: Request, res: Res, who: ConsoleUser, alert_id: int) -> Response:
    return await change(request, res, who, alert_id, "unshelve")
