"""The console's sessions over real HTTP against the real API, PostgreSQL and Redis: login
through the form, its limits and audit, CSRF, an ended session back to login and then to
the page, readable error pages, and what the pages load."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from services.api.console.session import COOKIE
from tests.fixtures.api import ADMIN_PASSWORD, PASSWORD, Api
from tests.utils.console import CSRF, console_client, csrf_token
from tests.utils.db import fetch

OUTSIDE = re.compile(r"""(?:src|href|action)=["'](?:https?:)?//""")


async def test_login_opens_a_session_and_the_fleet_page(api: Api, db_url: str) -> None:
    anonymous = httpx.AsyncClient(base_url=api.url)
    api._clients.append(anonymous)
    first = await anonymous.get("/console/?status=online")
    assert first.status_code == 303
    assert first.headers["location"] == "/console/login?next=/console/%3Fstatus%3Donline"
    assert (await anonymous.get("/")).headers["location"] == "/console/"

    login = await anonymous.post("/console/login", data={
        "username": "admin", "password": ADMIN_PASSWORD, "next": "/console/?status=online"})
    assert login.status_code == 303
    assert login.headers["location"] == "/console/?status=online"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Path=/console" in cookie and "SameSite=lax" in cookie

    page = await anonymous.get("/console/?status=online")
    assert page.status_code == 200
    assert "<h1>Fleet" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert not OUTSIDE.search(page.text), "the page loads something from another origin"
    events = await fetch(db_url, "SELECT action, outcome, detail FROM audit_log "
                                 "WHERE action = 'auth.login' AND detail ->> 'via' = 'console'")
    assert [(e["action"], e["outcome"]) for e in events] == [("auth.login", "success")]


@pytest.mark.parametrize("api_overrides", [{"console_secure_cookie": True},
                                           {"forwarded_allow_ips": "127.0.0.1"}])
async def test_the_cookie_is_secure_behind_tls(api: Api) -> None:
    """Set by INSA_API_CONSOLE_SECURE_COOKIE, or seen from a trusted TLS proxy's
    X-Forwarded-Proto; on logout too."""
    client = httpx.AsyncClient(base_url=api.url, headers={"X-Forwarded-Proto": "https"})
    api._clients.append(client)
    login = await client.post("/console/login", data={"username": "admin",
                                                      "password": ADMIN_PASSWORD})
    cookie = login.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/console" in cookie
    assert f"Max-Age={api.settings.console_session_seconds}" in cookie
    # The client's jar keeps a Secure cookie from plain HTTP: the proxy's part, by hand.
    found = re.search(rf"{COOKIE}=([^;]+)", cookie)
    assert found
    sent = {"Cookie": f"{COOKIE}={found.group(1)}"}
    token = CSRF.search((await client.get("/console/", headers=sent)).text)
    assert token
    out = await client.post("/console/logout", data={"csrf_token": token.group(1)},
                            headers=sent)
    assert out.status_code == 303 and "Secure" in out.headers["set-cookie"]


async def test_a_wrong_password_is_refused_at_the_form_and_audited(api: Api,
                                                                   db_url: str) -> None:
    client = httpx.AsyncClient(base_url=api.url)
    api._clients.append(client)
    answer = await client.post("/console/login", data={"username": "admin",
                                                       "password": "wrong", "next": "/"})
    assert answer.status_code == 401
    assert "Wrong username or password." in answer.text
    assert "set-cookie" not in answer.headers
    [event] = await fetch(db_url, "SELECT outcome, detail FROM audit_log "
                                  "WHERE action = 'auth.login' AND outcome = 'failure'")
    assert event["outcome"] == "failure" and json.loads(event["detail"])["via"] == "console"


async def test_login_is_under_the_apis_brute_force_limits(api: Api) -> None:
    client = httpx.AsyncClient(base_url=api.url)
    api._clients.append(client)
    statuses = [(await client.post("/console/login", data={
        "username": "admin", "password": f"guess-{n}"})).status_code for n in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429
    right = await client.post("/console/login", data={"username": "admin",
                                                      "password": ADMIN_PASSWORD})
    assert right.status_code == 429 and "try again in" in right.text
    assert int(right.headers["retry-after"]) > 0


async def test_writes_need_the_sessions_csrf_token_and_this_origin(api: Api) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    token = await csrf_token(client)
    refused = await client.post("/console/logout", data={"csrf_token": "not-it"})
    assert refused.status_code == 403 and "stale" in refused.text
    foreign = await client.post("/console/logout", data={"csrf_token": token},
                                headers={"Origin": "https://elsewhere.example"})
    assert foreign.status_code == 403
    out = await client.post("/console/logout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    # The session ended on the server, not only in this cookie jar.
    assert (await client.get("/console/")).status_code == 303


async def test_a_login_ends_the_session_the_browser_had(api: Api) -> None:
    """Each login a new id, and the session of the cookie sent with it ended: an id known
    before the login (planted by someone, or the last user's of this browser) opens
    nothing after it."""
    planted = httpx.AsyncClient(base_url=api.url)
    api._clients.append(planted)
    planted.cookies.set(COOKIE, "planted-id", domain="127.0.0.1", path="/console")
    login = await planted.post("/console/login", data={"username": "admin",
                                                       "password": ADMIN_PASSWORD})
    assert login.status_code == 303 and planted.cookies[COOKIE] != "planted-id"
    before = planted.cookies[COOKIE]
    await api.user("viewer", "vic")
    again = await planted.post("/console/login", data={"username": "vic",
                                                       "password": PASSWORD})
    assert again.status_code == 303 and planted.cookies[COOKIE] != before
    assert "vic <small>(viewer)</small>" in (await planted.get("/console/")).text
    stale = httpx.AsyncClient(base_url=api.url)
    api._clients.append(stale)
    stale.cookies.set(COOKIE, before, domain="127.0.0.1", path="/console")
    assert (await stale.get("/console/")).status_code == 303, "the admin's session ended"


async def test_a_form_posted_after_the_session_ended_returns_to_its_page(api: Api) -> None:
    """Not to the address it posted to, which may have no page (GET /console/logout)."""
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    token = await csrf_token(client, "/console/users")
    await api.app.state.resources.redis.flushdb()
    posted = await client.post("/console/users/1/role", data={
        "role": "viewer", "csrf_token": token}, headers={"Referer": f"{api.url}/console/users"})
    assert posted.status_code == 303
    assert posted.headers["location"] == "/console/login?next=/console/users"
    out = await client.post("/console/logout", data={"csrf_token": token})
    assert out.headers["location"] == "/console/login?next=/console/"


async def test_a_login_form_posted_from_another_site_is_refused(api: Api) -> None:
    client = httpx.AsyncClient(base_url=api.url)
    api._clients.append(client)
    answer = await client.post("/console/login", headers={"Origin": "https://evil.example"},
                               data={"username": "admin", "password": ADMIN_PASSWORD})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers


async def test_an_ended_session_sends_htmx_to_login_then_back(api: Api) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    await api.app.state.resources.redis.flushdb()  # every session ends (as idleness would)
    partial = await client.get("/console/fleet/rows", headers={
        "HX-Request": "true", "HX-Current-URL": f"{api.url}/console/?site=North"})
    assert partial.status_code == 200
    assert partial.headers["hx-redirect"] == "/console/login?next=/console/%3Fsite%3DNorth"


async def test_a_changed_account_ends_its_sessions(api: Api) -> None:
    await api.user("viewer", "vera")
    client = await console_client(api, "vera")
    assert (await client.get("/console/")).status_code == 200
    [user] = [u for u in (await api.admin.get("/users")).json() if u["username"] == "vera"]
    changed = await api.admin.patch(f"/users/{user['id']}", json={"role": "operator"})
    assert changed.status_code == 200, changed.text
    assert (await client.get("/console/")).status_code == 303


async def test_unknown_pages_and_bad_input_are_readable_pages(api: Api) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    missing = await client.get("/console/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Not found" in missing.text
    bad = await client.get("/console/?status=sideways")
    assert bad.status_code == 422 and "status" in bad.text
    assert bad.headers["content-type"].startswith("text/html")
    # The API keeps its JSON.
    assert (await api.admin.get("/no-such-route")).json()["error"]["code"] == "not_found"
