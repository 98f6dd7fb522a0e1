"""Devices for engineers: the catalog in pages, registering a device (with its MQTT
account at once), changing it, issuing, rotating and revoking its broker credentials,
and deleting it, each after a confirmation where it cuts a device off.

Every write is the API's own route function (services/api/routes/devices.py and
provisioning.py) called with the signed-in user: the same checks, transaction, broker
commands and audit rows as `POST /api/v1/devices` and its siblings. A password is shown
on the page that answers the write and nowhere else: the API does not keep it, the page
is `Cache-Control: no-store` (the API's middleware), and no later page has it.

The device's own pages sit one level down (`/console/devices/<id>/edit`), so no device
id can be mistaken for `register`.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
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
from services.api.console.device_forms import (
    ATTRIBUTE_INPUTS,
    device_in,
    device_patch,
    device_values,
)
from services.api.console.rendering import render
from services.api.console.session import PATH, ConsoleUser, flash, take_notice
from services.api.deps import Res, authorize
from services.api.devices import DeviceOut
from services.api.routes import devices as api_devices
from services.api.routes import provisioning as api_provisioning
from services.api.security.principal import Principal

BASE = PATH + "/devices"
PERMISSION = "devices:write"
PAGE_SIZE = 50
router = APIRouter(prefix=BASE, include_in_schema=False)
FIELDS = frozenset({"device_id", "name", "device_type", "tags", "metadata", "attributes",
                    *(name for name, _, _ in ATTRIBUTE_INPUTS)})
Action = Literal["credentials", "revoke", "delete"]

# What each confirmation page says: (title, what happens, button, whether it destroys).
CONFIRM: dict[str, tuple[str, str, str, bool]] = {
    "credentials": ("Issue new MQTT credentials",
                    "A new password is made and shown once. If the device already has "
                    "credentials, its current password stops working at once and its "
                    "connection is dropped: it must be given the new one.",
                    "Issue new credentials", False),
    "revoke": ("Revoke MQTT credentials",
               "The device's broker account is deleted: it is disconnected and cannot "
               "connect again until new credentials are issued. The device and its data "
               "stay.", "Revoke credentials", True),
    "delete": ("Delete the device",
               "The device is deleted with its broker account (it is disconnected), its "
               "retained configuration, and its commands, API keys, diagnoses and alerts. "
               "Its telemetry stays. This cannot be undone.", "Delete device", True),
}


@router.get("")
async def devices_page(request: Request, res: Res, who: ConsoleUser,
                       q: Annotated[str | None, Query(max_length=128)] = None,
                       cursor: Annotated[str | None, Query(max_length=512)] = None
                       ) -> Response:
    """The catalog by device id, 50 a page; `q` a prefix of the id or the name (the
    API's search)."""
    await authorize(res, who, PERMISSION, request)
    page = await api_devices.list_devices(res, who, None, None, None, q or None,
                                          cursor or None, PAGE_SIZE)
    search = {"q": q} if q else {}
    return render(request, "devices_admin.html", {
        "devices": page.items, "q": q or "", "notice": await take_notice(res, request),
        "first_url": f"{BASE}?{urlencode(search)}" if cursor else None,
        "next_url": f"{BASE}?{urlencode({**search, 'cursor': page.next_cursor})}"
        if page.next_cursor else None}, who)


@router.get("/register")
async def register_form(request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    return form_page(request, who, None, {"device_type": "esp", "provision": "on"})


@router.post("/register")
async def register(request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    form = await posted(request)
    try:
        created = await api_devices.create_device(device_in(form), res, who)
    except REFUSALS as exc:
        status, errors = refusal(exc, "device_id")
        return form_page(request, who, None, form, errors, status)
    if created.credentials is None:
        await flash(res, request, "Registered, without MQTT credentials: issue them below "
                                  "when the device is ready.")
        return see_other(f"{BASE}/{created.device_id}/edit")
    return render(request, "device_secret.html", {
        "device_id": created.device_id, "credentials": created.credentials,
        "registered": True}, who, status=201)


@router.get("/{device_id}/edit")
async def edit_form(device_id: str, request: Request, res: Res, who: ConsoleUser
                    ) -> Response:
    await authorize(res, who, PERMISSION, request)
    device = await api_devices.get_device(device_id, res, who)
    return form_page(request, who, device, device_values(device),
                     notice=await take_notice(res, request))


@router.post("/{device_id}/edit")
async def edit(device_id: str, request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    device = await api_devices.get_device(device_id, res, who)
    form = await posted(request)
    try:
        await api_devices.update_device(device_id, device_patch(form), res, who)
    except REFUSALS as exc:
        status, errors = refusal(exc)
        return form_page(request, who, device, {**form, "device_id": device_id}, errors,
                         status)
    await flash(res, request, "Saved.")
    return see_other(f"{BASE}/{device_id}/edit")


@router.get("/{device_id}/{action}")
async def confirm_page(device_id: str, action: Action, request: Request, res: Res,
                       who: ConsoleUser) -> Response:
    """The step before a write that cuts the device off: what will happen, and a button
    that posts to the same address."""
    await authorize(res, who, PERMISSION, request)
    device = await api_devices.get_device(device_id, res, who)
    title, text, button, danger = CONFIRM[action]
    return confirm(request, who, "Devices", f"{title}: {device.device_id}", text, button,
                   f"{BASE}/{device_id}/{action}", f"{BASE}/{device_id}/edit", danger)


@router.post("/{device_id}/credentials")
async def issue_credentials(device_id: str, request: Request, res: Res,
                            who: ConsoleUser) -> Response:
    """Provision (no account yet) or rotate (a new password; the old one stops working)."""
    await authorize(res, who, PERMISSION, request)
    credentials = await api_provisioning.issue_credentials(device_id, res, who)
    return render(request, "device_secret.html", {
        "device_id": device_id, "credentials": credentials, "registered": False}, who)


@router.post("/{device_id}/revoke")
async def revoke_credentials(device_id: str, request: Request, res: Res,
                             who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    await api_provisioning.revoke_credentials(device_id, res, who)
    await flash(res, request, "Credentials revoked: the device is disconnected and cannot "
                              "connect until new ones are issued.")
    return see_other(f"{BASE}/{device_id}/edit")


@router.post("/{device_id}/delete")
async def delete(device_id: str, request: Request, res: Res, who: ConsoleUser) -> Response:
    await authorize(res, who, PERMISSION, request)
    await api_devices.delete_device(device_id, res, who)
    await flash(res, request, f"Device {device_id} deleted, with its MQTT account.")
    return see_other(BASE)


def form_page(request: Request, who: Principal, device: DeviceOut | None,
              values: dict[str, str], errors: Errors | None = None, status: int = 200,
              notice: str | None = None) -> Response:
    """Registration (`device` None) or the device's own page, with what was typed and
    the API's refusals at their inputs."""
    return render(request, "device_form.html", {
        "device": device, "attributes": ATTRIBUTE_INPUTS, "notice": notice,
        **context(values, errors, FIELDS)}, who, status=status)
