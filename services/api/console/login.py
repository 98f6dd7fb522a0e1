"""Logging in and out of the console: the API's password check and limits
(services/api/security/login.py), a session instead of tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.api import audit
from services.api.console.rendering import render
from services.api.console.session import (
    PATH,
    ConsoleUser,
    close_session,
    open_session,
    safe_next,
    same_origin,
    session_of,
)
from services.api.deps import Res, client_of
from services.api.security.login import check_password
from services.api.security.tokens import account_version
from shared.errors import TooManyRequests, Unauthorized

router = APIRouter(prefix=PATH, include_in_schema=False)


@router.get("/login")
async def login_page(request: Request, res: Res, next: str | None = None) -> Response:
    if await session_of(res, request) is not None:
        return RedirectResponse(safe_next(next), 303)
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request, res: Res, username: Annotated[str, Form(max_length=64)],
                password: Annotated[str, Form(max_length=1024)],
                next: Annotated[str, Form()] = PATH + "/") -> Response:
    target = safe_next(next)

    def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
        return render(request, "login.html", {"next": target, "error": error,
                                              "username": username}, status=status,
                      headers=headers)

    if not same_origin(request):  # login CSRF: a foreign page logging a browser in
        return again("This form came from another site.", 403)
    try:
        row = await check_password(res, username, password, client_of(request),
                                   via="console")
    except Unauthorized:
        return again("Wrong username or password.", 401)
    except TooManyRequests as exc:
        return again(f"Too many failed logins: try again in {exc.retry_after} s.", 429,
                     {"Retry-After": str(exc.retry_after)})
    response = RedirectResponse(target, 303)
    await open_session(res, response, request, row["id"], account_version(row["updated_at"]))
    await audit.record(res.pool, f"user:{username}", "auth.login", username,
                       client=client_of(request), via="console")
    return response


@router.post("/logout")
async def logout(request: Request, res: Res, who: ConsoleUser) -> Response:
    response = RedirectResponse(f"{PATH}/login", 303)
    await close_session(res, request, response)
    await audit.record(res.pool, who.actor, "auth.logout", who.name,
                       client=client_of(request), via="console")
    return response
