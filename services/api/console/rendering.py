"""Pages from the console's Jinja2 templates (autoescaped), with the console's own
Content-Security-Policy: everything from this origin and nothing inline, so a value that
slipped past escaping still could not run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from services.api.security.permissions import allowed
from services.api.security.principal import Principal
from services.api.static_files import HTMX, UPLOT, vendor_url

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "font-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'",
    "form-action 'self'"))


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'42 s ago', '3 min ago', '5 h ago', '2 d ago'; '—' for never."""
    if moment is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


# The sections after Fleet: (path, label, the permission that shows it).
NAV: list[tuple[str, str, str]] = [
    ("/console/alarms", "Alarms", "alerts:read"),
    ("/console/rules", "Rules", "rules:read"),
    ("/console/devices", "Devices", "devices:write"),
    ("/console/users", "Users", "users:manage"),
    ("/console/api-keys", "API keys", "keys:manage"),
    ("/console/audit", "Audit", "audit:read"),
]

TEMPLATES.env.globals["nav_pages"] = NAV
# The vendored libraries by version (services/api/static_files.py): {{ assets.htmx }}.
TEMPLATES.env.globals["assets"] = {
    "htmx": vendor_url(HTMX, "htmx.min.js"), "uplot_js": vendor_url(UPLOT, "uPlot.iife.min.js"),
    "uplot_css": vendor_url(UPLOT, "uPlot.min.css")}
TEMPLATES.env.filters["ago"] = ago
TEMPLATES.env.filters["when"] = when


def render(request: Request, template: str, context: dict[str, Any],
           who: Principal | None = None, status: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    """`who` decides what the page offers (`can('rules:write')`); the server checks each
    write again whatever the page showed."""
    page = {"request": request, "who": who,
            "csrf_token": getattr(request.state, "csrf", ""),
            "can": (lambda permission: who is not None and
                    allowed(who.role, permission, who.device_id)),
            **context}
    return TEMPLATES.TemplateResponse(request, template, page, status_code=status,
                                      headers={"Content-Security-Policy": POLICY,
                                               "Referrer-Policy": "same-origin",
                                               **(headers or {})})


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def go(request: Request, target: str) -> Response:
    """To `target` by GET. For htmx, a full page load (HX-Redirect): a 303 would be
    followed by htmx itself and the whole page swapped into the part that asked."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, 303)
