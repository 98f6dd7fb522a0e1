"""Console sessions: a random id in an HttpOnly cookie, the session itself in Redis.

Why not the API's JWTs in a cookie: a session must end on logout and after a spell of
idleness, which a self-contained token cannot, and a browser must never hold a token that
works against the API from a script. The session records the account version it was
opened at, so a password, role or status change ends it (as it ends tokens).

CSRF: every session has its own random token, sent back on every unsafe request in the
`X-CSRF-Token` header (htmx, from the page's `hx-headers`) or a `csrf_token` form field,
and compared in constant time; a request whose Origin is another site is refused as well.
The cookie is SameSite=Lax and scoped to /console.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

import orjson
from fastapi import Depends, Request, Response

from services.api.deps import Res, Resources, user_principal
from services.api.security.principal import Principal
from shared.errors import Forbidden, Unauthorized

COOKIE = "insa_console"
PATH = "/console"
PREFIX = "insa:console:session:"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NOTICE_SECONDS = 60


@dataclass(frozen=True)
class Session:
    user_id: int
    version: int
    csrf: str
    started: float


class LoginRequired(Exception):
    """No session, or one that ended: back to the login page, then to `next`."""

    def __init__(self, next_path: str, reason: str) -> None:
        super().__init__(reason)
        self.next_path, self.reason = next_path, reason


def _key(session_id: str) -> str:
    # Only a digest is stored: a read of Redis does not yield cookies that log in.
    return PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _notice_key(session_id: str) -> str:
    return _key(session_id) + ":notice"


async def open_session(res: Resources, response: Response, request: Request, user_id: int,
                       version: int) -> None:
    """A new session under a new id. The session of any cookie the browser still sent
    ends here: a login never keeps an id that was known before it (session fixation),
    nor leaves an earlier session of this browser alive."""
    await _end(res, request)
    session_id = secrets.token_urlsafe(32)
    value = {"user_id": user_id, "version": version, "csrf": secrets.token_urlsafe(32),
             "started": time.time()}
    await res.redis.set(_key(session_id), orjson.dumps(value),
                        ex=res.settings.console_idle_seconds)
    response.set_cookie(COOKIE, session_id, path=PATH, httponly=True, samesite="lax",
                        secure=secure(res, request),
                        max_age=res.settings.console_session_seconds)


async def _end(res: Resources, request: Request) -> None:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        await res.redis.delete(_key(session_id), _notice_key(session_id))


async def close_session(res: Resources, request: Request, response: Response) -> None:
    await _end(res, request)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="lax",
                           secure=secure(res, request))


def secure(res: Resources, request: Request) -> bool:
    return res.settings.console_secure_cookie or request.url.scheme == "https"


async def session_of(res: Resources, request: Request) -> Session | None:
    """The request's session, its idle timer restarted; None if it has none or it ended."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    raw = await res.redis.getex(_key(session_id), ex=res.settings.console_idle_seconds)
    if raw is None:
        return None
    found = Session(**orjson.loads(raw))
    if time.time() - found.started > res.settings.console_session_seconds:
        await res.redis.delete(_key(session_id))
        return None
    return found


def return_path(request: Request) -> str:
    """Where to come back after logging in: the page itself; for an htmx request the page
    it was made from; for a form's post the page the form was on (its Referer, which the
    pages' Referrer-Policy sends to this origin), since the address it posted to may have
    no page (a GET of /console/logout is a 405)."""
    current = request.headers.get("hx-current-url")
    if not current and request.method not in SAFE_METHODS:
        current = request.headers.get("referer") or PATH + "/"
    if current:
        parts = urlsplit(current)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(value: str | None) -> str:
    """Only a console path of this origin: never an open redirect."""
    if value and value.startswith(PATH + "/") and not value.startswith("//") \
            and "\\" not in value:
        return value
    return PATH + "/"


def login_url(next_path: str) -> str:
    return f"{PATH}/login?next={quote(next_path, safe='/')}"


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site: Sec-Fetch-Site
    where it sends one (every current browser), else the Origin header. Pages are served
    with Referrer-Policy same-origin, under which a browser's own form posts name their
    origin (under no-referrer they send `Origin: null`)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request: those carry one or the other
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def flash(res: Resources, request: Request, text: str) -> None:
    """A notice for the next page this session loads that shows one (take_notice): what a
    write did, said after its redirect without putting any text in the address, so no
    link can make a page announce something that did not happen."""
    session_id = request.cookies.get(COOKIE)
    if session_id:
        await res.redis.set(_notice_key(session_id), text, ex=NOTICE_SECONDS)


async def take_notice(res: Resources, request: Request) -> str | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    found = await res.redis.getdel(_notice_key(session_id))
    return found.decode() if isinstance(found, bytes) else found


async def console_user(request: Request, res: Res) -> Principal:
    """The signed-in user, checked as a token is (disabled, changed), and for an unsafe
    method the CSRF token and the origin."""
    found = await session_of(res, request)
    if found is None:
        raise LoginRequired(return_path(request), "session ended")
    try:
        who = await user_principal(res, found.user_id, found.version)
    except Unauthorized as exc:
        await _end(res, request)
        raise LoginRequired(return_path(request), exc.message) from exc
    if request.method not in SAFE_METHODS:
        await check_csrf(request, found)
    request.state.csrf = found.csrf
    return who


async def check_csrf(request: Request, found: Session) -> None:
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        field = (await request.form()).get("csrf_token")
        sent = field if isinstance(field, str) else None
    if not same_origin(request) or sent is None or \
            not hmac.compare_digest(sent.encode(), found.csrf.encode()):
        raise Forbidden("the form is stale or came from another site: reload the page")


ConsoleUser = Annotated[Principal, Depends(console_user)]
