"""API keys, for admins: the keys (never the secrets), a new one shown once, and revoking
one after a confirmation.

The writes are the API's route functions (services/api/routes/api_keys.py) with the
signed-in admin: the same rules (a device key needs its device, which must exist), the
same hashing (only the key's SHA-256 is stored) and the same audit rows. The key is on
the page that answers its creation and nowhere else (`Cache-Control: no-store`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

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
    utc_moment,
)
from services.api.console.rendering import render
from services.api.console.session import PATH, ConsoleUser, flash, take_notice
from services.api.deps import Res, Resources, authorize
from services.api.routes import api_keys as api_keys_routes
from services.api.routes.api_keys import KeyIn, KeyOut
from services.api.security.principal import Principal
from shared.errors import NotFound

BASE = PATH + "/api-keys"
PERMISSION = "keys:manage"
router = APIRouter(prefix=BASE, include_in_schema=False)
FIELDS = frozenset({"name", "role", "device_id", "expires_at"})
ROLES = get_args(KeyIn.model_fields["role"].annotation)


@router.get("")
async def keys_page(request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    return await page(request, res, who, notice=await take_notice(res, request))


@router.post("")
async def create(request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    form = await posted(request)
    try:
        body = KeyIn.model_validate({
            "name": form.get("name", "").strip(), "role": form.get("role", ""),
            "device_id": form.get("device_id", "").strip() or None,
            "expires_at": utc_moment(form.get("expires_at", "").strip())})
        created = await api_keys_routes.create_key(body, res, who)
    except REFUSALS as exc:
        # A key's own check (a device key without a device) names no field: it is the
        # device's.
        status, errors = refusal(exc, "device_id")
        return await page(request, res, who, form, errors, status)
    return render(request, "api_key_secret.html", {"created": created}, who, status=201)


@router.get("/{key_id}/revoke")
async def confirm_revoke(key_id: int, request: Request, res: Res,
                         who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    key = await key_of(res, who, key_id)
    return confirm(request, who, "API keys", f"Revoke API key {key.name} ({key.prefix})",
                   "The key stops working at once, for every request and every live feed "
                   "using it. A revoked key cannot be restored: a machine that still needs "
                   "access needs a new key.", "Revoke key", f"{BASE}/{key_id}/revoke", BASE)


@router.post("/{key_id}/revoke")
async def revoke(key_id: int, request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    key = await key_of(res, who, key_id)
    await api_keys_routes.revoke_key(key_id, res, who)
    await flash(res, request, f"Key {key.name} ({key.prefix}) revoked: it no longer works.")
    return see_other(BASE)


async def key_of(res: Resources, who: Principal, key_id: int) -> KeyOut:
    """One key as the API lists it (the API has no route for one key; keys are few)."""
    for key in await api_keys_routes.list_keys(res, who):
        if key.id == key_id:
            return key
    raise NotFound(f"API key {key_id} does not exist")


def state(key: KeyOut, now: datetime) -> Literal["active", "revoked", "expired"]:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


async def page(request: Request, res: Resources, who: Principal,
               values: dict[str, str] | None = None, errors: Errors | None = None,
               status: int = 200, notice: str | None = None) -> Response:
    """The keys, newest first, and the new-key form."""
    now = datetime.now(UTC)
    keys = [(key, state(key, now))
            for key in reversed(await api_keys_routes.list_keys(res, who))]
    return render(request, "api_keys_admin.html", {
        "keys": keys, "roles": ROLES, "notice": notice,
        **context(values or {"role": "viewer"}, errors, FIELDS)}, who, status=status)
