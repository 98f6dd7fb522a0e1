"""Users, for admins: the accounts, a new one, a changed role, disabled or enabled, and
deleted after a confirmation.

Each write is the API's route function (services/api/routes/users.py) called with the
signed-in admin, so its rules hold here with its words: unique names ignoring case, the
password's minimum length, no admin demoting, disabling or deleting themself (so the
platform always keeps the admin doing it), every change ending the user's sessions and
tokens (console sessions too), and the audit row. Its refusals are shown at the input
they concern, on the row of the user they concern.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.api.console.admin_forms import (
    REFUSALS,
    Errors,
    confirm,
    context,
    posted,
    refusal,
    see_other,
)
from services.api.console.rendering import render
from services.api.console.session import PATH, ConsoleUser, flash, take_notice
from services.api.deps import Res, Resources, authorize
from services.api.routes import users as api_users
from services.api.security.principal import USER_ROLES, Principal

BASE = PATH + "/users"
PERMISSION = "users:manage"
router = APIRouter(prefix=BASE, include_in_schema=False)
CREATE_FIELDS = frozenset({"username", "password", "role"})
Done = Literal["created", "role", "disabled", "enabled", "deleted"]
NOTICES: dict[str, str] = {
    "created": "User {name} created.",
    "role": "Role of {name} changed; their sessions ended.",
    "disabled": "{name} disabled: their sessions ended and they cannot log in.",
    "enabled": "{name} enabled.",
    "deleted": "User {name} deleted."}


@router.get("")
async def users_page(request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    return await page(request, res, who, notice=await take_notice(res, request))


@router.post("")
async def create(request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    form = await posted(request)
    fields = {k: form.get(k, "") for k in ("username", "password", "role")}
    try:
        created = await api_users.create_user(api_users.UserIn.model_validate(fields), res,
                                              who)
    except REFUSALS as exc:
        status, errors = refusal(exc, "username")
        # Shown again, but never the password.
        return await page(request, res, who, {"username": fields["username"],
                                               "role": fields["role"]}, errors, status=status)
    return await done_page(request, res, "created", created.username)


@router.post("/{user_id}/role")
async def change_role(user_id: int, request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    user = await api_users.get_user(user_id, res, who)
    role = (await posted(request)).get("role", "")
    if role == user.role:  # nothing to change: no write, so no sessions end
        return see_other(BASE)
    return await change(request, res, who, user_id, {"role": role}, "role", "role")


@router.post("/{user_id}/status")
async def change_status(user_id: int, request: Request, res: Res,
                        who: ConsoleUser) -> Response:
    """`disabled` true or false: disabling ends the user's sessions at once."""
    await authorize(res, who, PERMISSION, request)
    await api_users.get_user(user_id, res, who)
    disabled = (await posted(request)).get("disabled", "")
    done: Done = "disabled" if disabled == "true" else "enabled"
    return await change(request, res, who, user_id, {"disabled": disabled}, "disabled", done)


async def change(request: Request, res: Resources, who: Principal, user_id: int,
                 fields: dict[str, Any], field: str, done: Done) -> Response:
    try:
        changed = await api_users.update_user(
            user_id, api_users.UserPatch.model_validate(fields), res, who)
    except REFUSALS as exc:
        status, errors = refusal(exc, field)
        return await page(request, res, who, rows={user_id: errors}, status=status)
    return await done_page(request, res, done, changed.username)


@router.get("/{user_id}/delete")
async def confirm_delete(user_id: int, request: Request, res: Res,
                         who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    user = await api_users.get_user(user_id, res, who)
    return confirm(request, who, "Users", f"Delete user {user.username}",
                   "The account is deleted: its sessions and tokens end, and it cannot log "
                   "in again. Its entries on the audit trail stay. To stop someone only for "
                   "a while, disable the account instead.", "Delete user",
                   f"{BASE}/{user_id}/delete", BASE)


@router.post("/{user_id}/delete")
async def delete(user_id: int, request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    user = await api_users.get_user(user_id, res, who)
    try:
        await api_users.delete_user(user_id, res, who)
    except REFUSALS as exc:
        status, errors = refusal(exc, "delete")
        return await page(request, res, who, rows={user_id: errors}, status=status)
    return await done_page(request, res, "deleted", user.username)


async def done_page(request: Request, res: Resources, done: Done, name: str) -> Response:
    await flash(res, request, NOTICES[done].format(name=name))
    return see_other(BASE)


async def page(request: Request, res: Resources, who: Principal,
               values: dict[str, str] | None = None, errors: Errors | None = None,
               rows: dict[int, Errors] | None = None, status: int = 200,
               notice: str | None = None) -> Response:
    """The users and the new-user form; `errors` are the form's, `rows` a user's own
    (by id: their role, status or deletion refused)."""
    users = await api_users.list_users(res, who)
    return render(request, "users_admin.html", {
        "users": users, "roles": USER_ROLES, "rows": rows or {}, "notice": notice,
        **context(values or {"role": "viewer"}, errors, CREATE_FIELDS)},
        who, status=status)
