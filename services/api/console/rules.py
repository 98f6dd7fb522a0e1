"""The rules page: every alert rule with its status, switched on and off in place; a form
per rule type to create and edit one (the API's validation messages at their fields), a
backtest of the form's rule before it is saved, and deletion after a confirmation.

Every read and write is the API's own route function (services/api/routes/rules.py), so
validation, the audit trail and the engines' pick-up (the `rules` table's NOTIFY) are the
API's; this module only turns forms into rule bodies and answers into pages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.api.console import rule_form, rule_inputs
from services.api.console.admin_forms import posted
from services.api.console.rendering import go, is_htmx, render
from services.api.console.rule_preview import Preview, preview, window_labels
from services.api.console.session import PATH as CONSOLE
from services.api.console.session import ConsoleUser, flash, safe_next, take_notice
from services.api.deps import Res, authorize
from services.api.routes.rules import (
    RuleOut,
    RulePatch,
    RuleType,
    create_rule,
    delete_rule,
    get_rule,
    list_rules,
    patch_rule,
    replace_rule,
)
from services.api.security.permissions import allowed
from services.api.security.principal import Principal
from shared.alerting.rules import RULE_TYPES, parse_rule
from shared.errors import Conflict, ValidationFailed

PATH = CONSOLE + "/rules"
router = APIRouter(prefix=PATH, include_in_schema=False)
PAGE_SIZE = 100


@dataclass
class FormView:
    """The form as the template shows it: its values (input name: text), errors (input
    name: the API's message) and, after a backtest, what the rule would have raised."""

    action: str  # where it is saved: PATH/new or PATH/<id>; its /form and /backtest beside
    values: dict[str, str]
    creating: bool
    errors: dict[str, str] = field(default_factory=dict)
    backtest: Preview | None = None

    @property
    def rule_type(self) -> str:
        return self.values.get("type", "threshold")

    @property
    def common(self) -> tuple[rule_inputs.Input, ...]:
        return rule_inputs.inputs_of("", self.creating)  # no type: the common ones

    @property
    def own(self) -> tuple[rule_inputs.Input, ...]:
        return rule_inputs.TYPE_INPUTS.get(self.rule_type, ())


def row_of(rule: RuleOut) -> dict[str, Any]:
    """A rule as its list row shows it."""
    definition = rule.definition
    scope = {k: v for k, v in (definition.get("scope") or {}).items() if v is not None}
    kind, value = next(iter(scope.items()), ("", ""))
    try:
        parsed = parse_rule({**definition, "name": rule.name})
        condition = f"{parsed.subject} {parsed.threshold}"
    except ValidationFailed:
        condition = ""
    return {"id": rule.id, "name": rule.name, "type": rule.type, "enabled": rule.enabled,
            "builtin": rule.builtin, "severity": str(definition.get("severity", "")),
            "scope": {"device_id": f"device {value}", "device_type": f"type {value}",
                      "tag": f"tag {value}"}.get(kind, "all devices"),
            "condition": condition, "problem": rule.problem, "skipped": rule.skipped}


# --- list -----------------------------------------------------------------------------------
@router.get("")
async def rules_page(request: Request, res: Res, who: ConsoleUser,
                     type: Annotated[RuleType | Literal[""] | None, Query()] = None,
                     enabled: Literal["", "true", "false"] = "",
                     cursor: Annotated[str | None, Query(max_length=200)] = None
                     ) -> Response:
    await authorize(res, who, "rules:read", request)
    page = await list_rules(res, who, rule_type=type or None,
                            enabled=None if not enabled else enabled == "true",
                            builtin=None, cursor=cursor, limit=PAGE_SIZE)
    chosen = {"type": type or "", "enabled": enabled}
    # A switch's post without script comes back to this list as filtered, on this page.
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    next_url = None
    if page.next_cursor:
        next_url = f"{PATH}?{urlencode({**chosen, 'cursor': page.next_cursor})}"
    return render(request, "rules.html", {
        "rules": [row_of(r) for r in page.items], "chosen": chosen, "types": RULE_TYPES,
        "next_url": next_url, "back": back, "notice": await take_notice(res, request)}, who)


@router.post("/{rule_id:int}/enabled")
async def set_enabled(request: Request, res: Res, who: ConsoleUser, rule_id: int,
                      enabled: Annotated[bool, Form()],
                      next: Annotated[str, Form(max_length=500)] = PATH) -> Response:
    """The list's switch: htmx swaps the row in place; a plain form comes back to `next`."""
    await authorize(res, who, "rules:write", request)
    rule = await patch_rule(rule_id, RulePatch(enabled=enabled), res, who)
    if is_htmx(request):
        return render(request, "_rule_row.html", {"r": row_of(rule), "back": safe_next(next)},
                      who)
    return RedirectResponse(safe_next(next), 303)


# --- one rule -------------------------------------------------------------------------------
def _page(request: Request, who: Principal, rule: RuleOut | None, form: FormView | None,
          status: int = 200, notice: str | None = None) -> Response:
    definition = None if rule is None else orjson.dumps(
        {"name": rule.name, **rule.definition}, option=orjson.OPT_INDENT_2).decode()
    return render(request, "rule.html", {
        "rule": None if rule is None else row_of(rule), "form": form, "notice": notice,
        "definition": definition, **_form_context()}, who, status=status)


def _form_context() -> dict[str, Any]:
    return {"types": RULE_TYPES, "windows": window_labels(),
            "limit_kinds": rule_inputs.LIMIT_KINDS, "attributes": rule_inputs.ATTRIBUTE_NAMES}


async def _answer(request: Request, res: Res, who: Principal, rule_id: int | None,
                  form: FormView, status: int) -> Response:
    """The form again (htmx swaps it in place; 409 and 422 included), or the whole page."""
    if is_htmx(request):
        return render(request, "_rule_form.html", {"form": form, **_form_context()}, who,
                      status=status)
    rule = None if rule_id is None else await get_rule(rule_id, res, who)
    return _page(request, who, rule, form, status)


def _refused(form: FormView, exc: ValidationFailed | Conflict,
             body: dict[str, Any] | None) -> int:
    """The error at its input; the answer's status."""
    if isinstance(exc, Conflict):  # the only one: a rule of that name exists
        form.errors["name"] = exc.message
        return 409
    where = exc.field or "rule"
    if where in ("start", "end"):
        where = "window"
    elif where not in ("window", "device", "extra"):
        where = rule_inputs.input_for(where.removeprefix("rule."),
                                    exc.message.removeprefix("rule."), form.rule_type,
                                    body or {}, form.creating)
    form.errors[where] = exc.message
    return 422


@router.get("/new")
async def new_rule(request: Request, res: Res, who: ConsoleUser,
                   type: Annotated[RuleType, Query()] = "threshold") -> Response:
    await authorize(res, who, "rules:write", request)
    return _page(request, who, None, FormView(
        f"{PATH}/new", {"type": type, "severity": "warning", "enabled": "true"}, True))


@router.get("/{rule_id:int}")
async def rule_page(request: Request, res: Res, who: ConsoleUser, rule_id: int,
                    ) -> Response:
    await authorize(res, who, "rules:read", request)
    rule = await get_rule(rule_id, res, who)
    form = None
    if allowed(who.role, "rules:write", who.device_id):  # else: read only
        form = FormView(f"{PATH}/{rule_id}", rule_form.values_of(rule.name, rule.definition),
                        False)
    return _page(request, who, rule, form, notice=await take_notice(res, request))


async def _save(request: Request, res: Res, who: Principal, rule_id: int | None) -> Response:
    await authorize(res, who, "rules:write", request)
    creating = rule_id is None
    form = FormView(f"{PATH}/{'new' if creating else rule_id}", await posted(request),
                    creating)
    body = None
    try:
        body = rule_form.body_of(form.values, creating)
        if rule_id is None:
            saved = await create_rule(body, res, who)
        else:
            saved = await replace_rule(rule_id, body, res, who)
    except (ValidationFailed, Conflict) as exc:
        return await _answer(request, res, who, rule_id, form, _refused(form, exc, body))
    await flash(res, request, "Saved. Running engines use it from their next reading.")
    return go(request, f"{PATH}/{saved.id}")


@router.post("/new")
async def create(request: Request, res: Res, who: ConsoleUser) -> Response:
    return await _save(request, res, who, None)


@router.post("/{rule_id:int}")
async def replace(request: Request, res: Res, who: ConsoleUser, rule_id: int) -> Response:
    """The whole rule, as `PUT /rules/{id}`; `enabled` is the list's switch, not the form's
    (left out, it stays as it was)."""
    return await _save(request, res, who, rule_id)


async def _redraw(request: Request, res: Res, who: Principal, rule_id: int | None,
                  test: bool) -> Response:
    """The form for another type or kind of limit (nothing checked), or with a backtest of
    the rule as it stands in it (nothing saved)."""
    await authorize(res, who, "rules:write", request)
    if rule_id is not None:
        await get_rule(rule_id, res, who)  # 404 for a rule that is not there (any more)
    values = await posted(request)
    form = FormView(f"{PATH}/{'new' if rule_id is None else rule_id}", values,
                    rule_id is None)
    if not test:
        return await _answer(request, res, who, rule_id, form, 200)
    body = None
    try:
        body = rule_form.body_of(values, form.creating)
        form.backtest = await preview(res, who, body, values.get("window", ""),
                                      values.get("device", "").strip() or None)
    except ValidationFailed as exc:
        return await _answer(request, res, who, rule_id, form, _refused(form, exc, body))
    return await _answer(request, res, who, rule_id, form, 200)


@router.post("/new/form")
async def new_form(request: Request, res: Res, who: ConsoleUser) -> Response:
    return await _redraw(request, res, who, None, test=False)


@router.post("/{rule_id:int}/form")
async def edit_form(request: Request, res: Res, who: ConsoleUser, rule_id: int) -> Response:
    return await _redraw(request, res, who, rule_id, test=False)


@router.post("/new/backtest")
async def new_backtest(request: Request, res: Res, who: ConsoleUser) -> Response:
    return await _redraw(request, res, who, None, test=True)


@router.post("/{rule_id:int}/backtest")
async def edit_backtest(request: Request, res: Res, who: ConsoleUser,
                        rule_id: int) -> Response:
    return await _redraw(request, res, who, rule_id, test=True)


# --- delete ---------------------------------------------------------------------------------
@router.get("/{rule_id:int}/delete")
async def confirm_delete(request: Request, res: Res, who: ConsoleUser,
                         rule_id: int) -> Response:
    """What deleting takes with it, before it is done."""
    await authorize(res, who, "rules:write", request)
    rule = await get_rule(rule_id, res, who)
    alerts = await res.pool.fetchval("SELECT count(*) FROM alerts WHERE rule_id = $1",
                                     rule_id)
    return render(request, "rule_delete.html", {"rule": row_of(rule), "alerts": alerts}, who)


@router.post("/{rule_id:int}/delete")
async def delete(request: Request, res: Res, who: ConsoleUser, rule_id: int) -> Response:
    await authorize(res, who, "rules:write", request)
    rule = await get_rule(rule_id, res, who)
    await delete_rule(rule_id, res, who)
    await flash(res, request, f"Deleted the rule “{rule.name}”.")
    return RedirectResponse(PATH, 303)
