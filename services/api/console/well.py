"""The well page: one well's header, latest values, trend charts, diagnoses, alerts,
commands and desired configuration, nameplate attributes, rejected messages and
connection history (docs/console.md, "Well").

The page itself renders what one device row holds (header, attributes) and the latest
values (the chart's metric picker needs them); every other section is a fragment of its
own that htmx loads once the page is there, so the first byte does not wait for the
slowest query, and a section's "older" link swaps only that section. Each section checks
its own read permission besides devices:read, as the API's routes do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import pydantic
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import AwareDatetime

from services.api import telemetry_queries as q
from services.api.console import well_queries as wq
from services.api.console import well_series
from services.api.console.rendering import is_htmx, render
from services.api.console.session import PATH, ConsoleUser
from services.api.deps import Res, Resources, authorize
from services.api.routes.commands import CommandIn, send_command
from services.api.security.principal import Principal
from shared.errors import ValidationFailed

router = APIRouter(prefix=PATH, include_in_schema=False)
WELL = "/wells/{device_id}"
LATEST_REFRESH_SECONDS = 30
DEFAULT_CHARTS = 3  # metrics charted when the page opens
Cursor = Annotated[str | None, Query(max_length=256)]
Range = Literal["1h", "6h", "24h", "7d", "30d", "90d"]


async def well(request: Request, res: Resources, who: Principal, device_id: str,
               permission: str) -> q.Device:
    """devices:read and the section's permission, then the device (404: unknown, or not
    this principal's)."""
    await authorize(res, who, "devices:read", request)
    await authorize(res, who, permission, request)
    return await q.device(res.pool, who, device_id)


def base(device_id: str) -> str:
    return f"{PATH}/wells/{device_id}"


@router.get(WELL)
async def well_page(request: Request, res: Res, who: ConsoleUser, device_id: str) -> Response:
    await authorize(res, who, "devices:read", request)
    top = await wq.header(res, who, device_id)
    await authorize(res, who, "telemetry:read", request)
    values = await wq.latest(res, who, device_id)
    numeric = [v["name"] for v in values if v["numeric"]]
    return render(request, "well.html", {
        **top, "values": values, "metrics": numeric, "charted": numeric[:DEFAULT_CHARTS],
        "ranges": list(well_series.RANGES), "default_range": well_series.DEFAULT_RANGE,
        "base": base(device_id), "refresh": LATEST_REFRESH_SECONDS}, who)


@router.get(WELL + "/latest")
async def latest_fragment(request: Request, res: Res, who: ConsoleUser,
                          device_id: str) -> Response:
    await well(request, res, who, device_id, "telemetry:read")
    return render(request, "_well_latest.html", {
        "values": await wq.latest(res, who, device_id), "base": base(device_id),
        "refresh": LATEST_REFRESH_SECONDS}, who)


@router.get(WELL + "/series")
async def series(request: Request, res: Res, who: ConsoleUser, device_id: str,
                 metrics: Annotated[str, Query(max_length=2000)],
                 width: Annotated[int, Query()] = 800, range: Range | None = None,
                 start: AwareDatetime | None = None,
                 end: AwareDatetime | None = None) -> Response:
    """The charts' data as JSON (well_series): `range` back from now, or `start` (and
    `end`, default now)."""
    dev = await well(request, res, who, device_id, "telemetry:read")
    names = q.names(metrics) or []
    if len(names) > well_series.MAX_METRICS:
        raise ValidationFailed("bad_metrics", f"metrics: at most {well_series.MAX_METRICS}",
                               field="metrics")
    if start is None:
        until = q.utc(end, "end") if end is not None else datetime.now(UTC)
        try:
            begin = until - well_series.RANGES[range or well_series.DEFAULT_RANGE]
        except OverflowError:
            raise ValidationFailed("bad_time", "end: too early for the range, which would "
                                   "begin before the year 1", field="end") from None
    else:
        begin, until = q.window(start, end, well_series.RANGES[well_series.DEFAULT_RANGE])
    found = await well_series.series(res.pool, dev, names, begin, until, width)
    return Response(orjson.dumps(found), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.get(WELL + "/diagnoses")
async def diagnoses_fragment(request: Request, res: Res, who: ConsoleUser, device_id: str,
                             cursor: Cursor = None) -> Response:
    await well(request, res, who, device_id, "diagnoses:read")
    history = await wq.diagnosis_history(res, who, device_id, cursor)
    current = await wq.open_diagnoses(res, who, device_id) if cursor is None else None
    return render(request, "_well_diagnoses.html", {
        "current": current, "history": history.items, "older": history.next_cursor,
        "paged": cursor is not None, "base": base(device_id)}, who)


@router.get(WELL + "/alerts")
async def alerts_fragment(request: Request, res: Res, who: ConsoleUser,
                          device_id: str) -> Response:
    await well(request, res, who, device_id, "alerts:read")
    still, done = await wq.well_alerts(res, who, device_id)
    return render(request, "_well_alerts.html", {"open": still, "resolved": done}, who)


@router.get(WELL + "/commands")
async def commands_fragment(request: Request, res: Res, who: ConsoleUser, device_id: str,
                            cursor: Cursor = None) -> Response:
    await well(request, res, who, device_id, "commands:read")
    return await commands_section(request, res, who, device_id, cursor)


async def commands_section(request: Request, res: Resources, who: Principal, device_id: str,
                           cursor: str | None = None, status: int = 200,
                           form: dict[str, Any] | None = None) -> Response:
    page = await wq.well_commands(res, who, device_id, cursor)
    top = await wq.header(res, who, device_id)
    return render(request, "_well_commands.html", {
        "commands": page.items, "older": page.next_cursor, "paged": cursor is not None,
        "desired": top["device"].desired_config, "base": base(device_id),
        "form": form or {"values": {}, "errors": {}, "sent": None}}, who, status=status)


@router.post(WELL + "/commands")
async def send(request: Request, res: Res, who: ConsoleUser, device_id: str,
               name: Annotated[str, Form()] = "", params: Annotated[str, Form()] = "",
               timeout_seconds: Annotated[str, Form()] = "") -> Response:
    """The API's send_command with the form as its body; a bad field is shown at the field
    (422), a sent command at the top of the list."""
    await authorize(res, who, "commands:send", request)  # before the well is looked up
    await well(request, res, who, device_id, "commands:read")
    values = {"name": name, "params": params, "timeout_seconds": timeout_seconds}
    errors: dict[str, str] = {}
    body: CommandIn | None = None
    try:
        parsed = orjson.loads(params) if params.strip() else {}
    except orjson.JSONDecodeError as exc:
        errors["params"], parsed = f"not JSON: {exc}", None
    if parsed is not None and not isinstance(parsed, dict):
        errors["params"] = "a JSON object, e.g. {\"delay_seconds\": 5}"
    if not errors:
        try:
            body = CommandIn(name=name.strip(), params=parsed,
                             timeout_seconds=timeout_seconds.strip() or None)
        except pydantic.ValidationError as exc:
            for e in exc.errors():
                errors.setdefault(str(e["loc"][0]) if e["loc"] else "name", e["msg"])
    sent = None
    if body is not None:
        try:
            sent = await send_command(device_id, body, res, who)
        except ValidationFailed as exc:
            errors[(exc.field or "name").split(".")[0]] = exc.message
    if errors:
        return await commands_section(request, res, who, device_id, status=422, form={
            "values": values, "errors": errors, "sent": None})
    if not is_htmx(request):
        return RedirectResponse(f"{base(device_id)}#commands", 303)
    return await commands_section(request, res, who, device_id, form={
        "values": {}, "errors": {}, "sent": sent})


@router.get(WELL + "/rejects")
async def rejects_fragment(request: Request, res: Res, who: ConsoleUser,
                           device_id: str) -> Response:
    await well(request, res, who, device_id, "telemetry:read")
    return render(request, "_well_rejects.html", {
        "rejects": await wq.well_rejects(res, who, device_id), "days": wq.REJECTS_DAYS}, who)


@router.get(WELL + "/connections")
async def connections_fragment(request: Request, res: Res, who: ConsoleUser, device_id: str,
                               cursor: Cursor = None) -> Response:
    await well(request, res, who, device_id, "devices:read")
    items, older = await wq.connections(res, who, device_id, cursor)
    return render(request, "_well_connections.html", {
        "changes": items, "older": older, "paged": cursor is not None,
        "base": base(device_id)}, who)
