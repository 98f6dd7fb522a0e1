"""The operator console: server-rendered pages under /console, served by the API with the
API's accounts, roles and queries (docs/console.md).

Why server-rendered (Jinja2) with htmx and uPlot, not a single-page app: a small Python
team keeps one language, one place where data is read and permissions are checked (the
same functions the API routes use), and no JavaScript build. htmx swaps fragments the
server renders (live rows, forms with their errors); uPlot draws time series from a few
tens of kilobytes. Both are vendored (services/api/static/vendor), so the console works
on a network without internet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api import errors
from services.api.console import (
    alarms,
    api_keys_admin,
    audit_admin,
    devices_admin,
    fleet,
    login,
    rules,
    users_admin,
    well,
)
from services.api.console.rendering import go, render
from services.api.console.session import PATH, LoginRequired, login_url
from shared.errors import InsaError, Unauthorized

log = structlog.get_logger(__name__)
ROUTERS = (login.router, fleet.router, well.router, devices_admin.router, users_admin.router,
           api_keys_admin.router, audit_admin.router, rules.router, alarms.router)
Handler = Callable[[Request, Any], Awaitable[Response]]


def is_console(request: Request) -> bool:
    return request.url.path == PATH or request.url.path.startswith(PATH + "/")


def to_login(request: Request, exc: LoginRequired) -> Response:
    return go(request, login_url(exc.next_path))


def error_page(request: Request, status: int, message: str) -> Response:
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Invalid input",
              429: "Too many attempts", 503: "Unavailable", 500: "Something went wrong"}
    return render(request, "error.html", {"status": status,
                                          "title": titles.get(status, "Error"),
                                          "message": message}, status=status)


def html_for_console(app: FastAPI, kind: type[Exception] | int,
                     message: Callable[[Any], tuple[int, str]]) -> None:
    """The API's handler of `kind` stays for the API; on a console path the same error is
    a readable page instead of JSON."""
    api_handler: Handler = app.exception_handlers[kind]  # type: ignore[assignment]  # ours

    async def handle(request: Request, exc: Any) -> Response:
        if not is_console(request):
            return await api_handler(request, exc)
        if isinstance(exc, Unauthorized):
            return to_login(request, LoginRequired(request.url.path, exc.message))
        status, text = message(exc)
        return error_page(request, status, text)

    app.add_exception_handler(kind, handle)


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    return 422, "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                          for e in exc.errors()[:5])


def install_console(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(LoginRequired, to_login)  # type: ignore[arg-type]
    html_for_console(app, InsaError, lambda exc: (errors.status_of(exc), exc.message))
    html_for_console(app, RequestValidationError, validation_message)
    html_for_console(app, StarletteHTTPException,
                     lambda exc: (exc.status_code, "no such page" if exc.status_code == 404
                                  else str(exc.detail)))
    app.add_middleware(errors.UnexpectedErrors, event="unhandled error in the console",
                       answer=lambda request: error_page(
                           request, 500, "an internal error; it has been logged"),
                       applies=is_console)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(PATH + "/", 307)

    @app.get(PATH, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(PATH + "/", 307)
