"""Every console route, found on the app itself, against who may open it: without a session
it goes to the login page; with one, a role not listed below gets a 403 page (and an audit
row) and a listed one gets past authorization; a write without the session's CSRF token,
or from another site, is refused; a principal with no permission at all is refused every
route (so a route that forgot its authorize() fails here even where every role may read);
and a principal scoped to one device sees nothing of another. The expectations are
written here from what the roles are for, not read from services/api/security/
permissions.py, as in tests/services/api/test_rbac.py; a route missing from `MAY_OPEN`
fails the walk."""

from __future__ import annotations

import dataclasses
import re
import typing

import httpx
import pytest
from fastapi.routing import APIRoute

from services.api.console import ROUTERS, session
from services.api.security import permissions
from services.api.security.principal import Principal
from tests.fixtures.api import ADMIN_PASSWORD, Api
from tests.utils.console import console_client, csrf_token
from tests.utils.db import execute, fetchval

PUBLIC = {"GET /console", "GET /console/login", "POST /console/login"}
LOGOUT = "POST /console/logout"
ADMIN = frozenset({"admin"})
ENGINEERS = frozenset({"admin", "engineer"})
OPERATORS = frozenset({"admin", "engineer", "operator"})
READERS = frozenset({"admin", "engineer", "operator", "viewer"})
WELL = "/console/wells/{device_id}"
RULE = "/console/rules/{rule_id:int}"
ALARM = "/console/alarms/{alert_id:int}"
DEVICE = "/console/devices/{device_id}"
USER = "/console/users/{user_id}"
KEY = "/console/api-keys/{key_id}"

# Operation (method and path as the app has it) -> the roles that may open it. Everyone
# reads the fleet, wells, alarms and rules; operators also act on alarms and send
# commands; engineers also change rules and devices; admins alone manage users and keys
# and read the audit trail.
MAY_OPEN: dict[str, frozenset[str]] = {
    LOGOUT: READERS,
    "GET /console/": READERS,
    "GET /console/fleet/rows": READERS,
    f"GET {WELL}": READERS,
    **{f"GET {WELL}/{part}": READERS for part in (
        "latest", "series", "diagnoses", "alerts", "commands", "rejects", "connections")},
    f"POST {WELL}/commands": OPERATORS,
    "GET /console/alarms": READERS,
    "GET /console/alarms/rows": READERS,
    f"GET {ALARM}": READERS,
    **{f"POST {ALARM}/{action}": OPERATORS
       for action in ("acknowledge", "resolve", "shelve", "unshelve")},
    "GET /console/rules": READERS,
    f"GET {RULE}": READERS,
    "GET /console/rules/new": ENGINEERS,
    "POST /console/rules/new": ENGINEERS,
    "POST /console/rules/new/form": ENGINEERS,
    "POST /console/rules/new/backtest": ENGINEERS,
    f"POST {RULE}": ENGINEERS,
    f"POST {RULE}/form": ENGINEERS,
    f"POST {RULE}/backtest": ENGINEERS,
    f"POST {RULE}/enabled": ENGINEERS,
    f"GET {RULE}/delete": ENGINEERS,
    f"POST {RULE}/delete": ENGINEERS,
    "GET /console/devices": ENGINEERS,
    "GET /console/devices/register": ENGINEERS,
    "POST /console/devices/register": ENGINEERS,
    f"GET {DEVICE}/edit": ENGINEERS,
    f"POST {DEVICE}/edit": ENGINEERS,
    f"GET {DEVICE}/{{action}}": ENGINEERS,
    f"POST {DEVICE}/credentials": ENGINEERS,
    f"POST {DEVICE}/revoke": ENGINEERS,
    f"POST {DEVICE}/delete": ENGINEERS,
    "GET /console/users": ADMIN,
    "POST /console/users": ADMIN,
    f"POST {USER}/role": ADMIN,
    f"POST {USER}/status": ADMIN,
    f"GET {USER}/delete": ADMIN,
    f"POST {USER}/delete": ADMIN,
    "GET /console/api-keys": ADMIN,
    "POST /console/api-keys": ADMIN,
    f"GET {KEY}/revoke": ADMIN,
    f"POST {KEY}/revoke": ADMIN,
    "GET /console/audit": ADMIN,
}
# What every request sends besides its CSRF token, so that no route refuses it for a
# missing field (422) before it checks the permission: the query and form fields some
# routes require.
QUERY = {"metrics": "motor_temp"}
FORM = {"enabled": "true"}
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def console_routes(api: Api) -> list[tuple[str, APIRoute]]:
    """(method, route) of every route under /console, logout last (it ends the session):
    those of the console's routers (what the app holds after include_router differs
    between FastAPI versions) and any the app holds itself."""
    routes = [r for router in ROUTERS for r in router.routes] + list(api.app.routes)
    found = [(method, route) for route in routes if isinstance(route, APIRoute)
             and (route.path == session.PATH or route.path.startswith(session.PATH + "/"))
             for method in sorted(route.methods or ())]
    return sorted(found, key=lambda c: (f"{c[0]} {c[1].path}" == LOGOUT, c[1].path, c[0]))


def operation(method: str, route: APIRoute) -> str:
    return f"{method} {route.path}"


def concrete_path(route: APIRoute) -> str:
    """Path parameters filled with values of their type that name nothing stored."""
    types = {p.name: p.field_info.annotation for p in route.dependant.path_params}

    def value(match: re.Match[str]) -> str:
        annotation = types[match.group(1)]
        if annotation is int:
            return "999999"
        if typing.get_origin(annotation) is typing.Literal:
            return str(typing.get_args(annotation)[0])
        return "W-nowhere"

    return PARAM.sub(value, route.path)


async def call(client: httpx.AsyncClient, method: str, route: APIRoute,
               token: str | None, **headers: str) -> httpx.Response:
    form = {**FORM, "csrf_token": token} if token is not None else FORM
    return await client.request(method, concrete_path(route), params=QUERY,
                                data=form if method != "GET" else None, headers=headers)


def to_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and \
        response.headers["location"].startswith("/console/login?next=")


def as_principal(monkeypatch: pytest.MonkeyPatch, role: str,
                 device_id: str | None = None) -> None:
    """Every console session's user becomes `role` (scoped to `device_id`), as though the
    permission table or the principal said so: what the console does with a principal no
    user account can be today."""
    real = session.user_principal

    async def changed(*args: typing.Any, **kwargs: typing.Any) -> Principal:
        return dataclasses.replace(await real(*args, **kwargs), role=role,
                                   device_id=device_id)

    monkeypatch.setattr(session, "user_principal", changed)


async def test_the_walk_covers_every_console_route(api: Api) -> None:
    walked = {operation(m, r) for m, r in console_routes(api)}
    assert walked - PUBLIC == set(MAY_OPEN), "MAY_OPEN must list every route, and only those"
    assert PUBLIC <= walked


async def test_without_a_session_every_route_goes_to_login(api: Api) -> None:
    anonymous = httpx.AsyncClient(base_url=api.url)
    api._clients.append(anonymous)
    for method, route in console_routes(api):
        if operation(method, route) in PUBLIC:
            continue
        answer = await call(anonymous, method, route, None)
        assert to_login(answer), f"{operation(method, route)}: {answer.status_code}"
        fragment = await call(anonymous, method, route, None, **{"HX-Request": "true"})
        assert fragment.headers.get("hx-redirect", "").startswith("/console/login?next="), \
            operation(method, route)


async def test_every_route_for_every_role(api: Api, db_url: str) -> None:
    clients: dict[str, tuple[httpx.AsyncClient, str]] = {}
    for role in sorted(READERS):
        await api.user(role, f"walk-{role}")
        client = await console_client(api, f"walk-{role}")
        clients[role] = (client, await csrf_token(client))
    wrong: list[str] = []
    denied = 0
    for method, route in console_routes(api):
        name = operation(method, route)
        if name in PUBLIC:
            continue
        for role, (client, token) in clients.items():
            answer = await call(client, method, route, token)
            ok = role in MAY_OPEN[name]
            if answer.status_code >= 500 or to_login(answer) or \
                    (ok and answer.status_code in (401, 403)) or \
                    (not ok and answer.status_code != 403):
                wrong.append(f"{role} {name}: {answer.status_code} {answer.text[:120]}")
            denied += not ok
    assert wrong == []
    assert await fetchval(db_url, "SELECT count(*) FROM audit_log WHERE action = "
                                  "'permission.denied'") == denied


async def test_a_principal_without_permissions_is_refused_every_route(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device key's role may read nothing of the console: every route but logout must
    be a 403, which only a route that checks its permission answers."""
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    token = await csrf_token(client)
    as_principal(monkeypatch, "device", device_id="W-nowhere")
    unchecked = []
    for method, route in console_routes(api):
        if operation(method, route) in PUBLIC | {LOGOUT}:
            continue
        answer = await call(client, method, route, token)
        if answer.status_code != 403:
            unchecked.append(f"{operation(method, route)}: {answer.status_code}")
    assert unchecked == [], "routes without a permission check"
    assert await fetchval(db_url, "SELECT count(*) FROM audit_log WHERE action = "
                                  "'permission.denied'") == len(MAY_OPEN) - 1


@pytest.mark.parametrize("permission", ["telemetry:read", "diagnoses:read", "alerts:read"])
async def test_the_fleet_needs_the_permission_of_each_thing_it_shows(
        api: Api, monkeypatch: pytest.MonkeyPatch, permission: str) -> None:
    """Its rows show health, diagnoses and alerts: a role that may read the devices but
    not one of those is refused the page and its refresh, as the API would refuse it."""
    await api.user("viewer", "walk-viewer")
    client = await console_client(api, "walk-viewer")
    monkeypatch.setitem(permissions.PERMISSIONS, permission, READERS - {"viewer"})
    for page in ("/console/", "/console/fleet/rows"):
        answer = await client.get(page)
        assert answer.status_code == 403 and f"may not {permission}" in answer.text, page


async def test_every_write_needs_the_csrf_token_and_this_origin(api: Api, db_url: str) -> None:
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    token = await csrf_token(client)
    writes = [(m, r) for m, r in console_routes(api)
              if m not in session.SAFE_METHODS and operation(m, r) not in PUBLIC]
    assert len(writes) >= 20
    for method, route in writes:
        for answer in (await call(client, method, route, None),
                       await call(client, method, route, "not-the-token"),
                       await call(client, method, route, token,
                                  Origin="https://elsewhere.example"),
                       await call(client, method, route, token,
                                  **{"Sec-Fetch-Site": "cross-site"})):
            assert answer.status_code == 403, f"{operation(method, route)}: {answer.text}"
            assert "came from another site" in answer.text
    assert (await client.get("/console/")).status_code == 200, "still logged in"
    assert await fetchval(db_url, "SELECT count(*) FROM audit_log WHERE actor = 'user:admin' "
                                  "AND action <> 'auth.login'") == 0, "nothing was done"


async def test_a_principal_scoped_to_one_device_sees_only_that_device(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for device_id, site, kind in (("W-mine", "North-pad", "esp-mine"),
                                  ("W-theirs", "South-pad", "esp-theirs")):
        await execute(db_url, "INSERT INTO devices (device_id, device_type, metadata) "
                              "VALUES ($1, $2, jsonb_build_object('site', $3::text))",
                      device_id, kind, site)
    client = await console_client(api, "admin", ADMIN_PASSWORD)
    as_principal(monkeypatch, "admin", device_id="W-mine")
    fleet = await client.get("/console/")
    assert fleet.status_code == 200
    assert all(mine in fleet.text for mine in ("W-mine", "North-pad", "esp-mine"))
    assert not any(theirs in fleet.text for theirs in ("W-theirs", "South-pad", "esp-theirs")), \
        "neither the other well nor its site or type among the filters"
    rows = await client.get("/console/fleet/rows")
    assert "W-mine" in rows.text and "W-theirs" not in rows.text
    devices = await client.get("/console/devices")
    assert "W-mine" in devices.text and "W-theirs" not in devices.text
    for page in ("/console/wells/W-theirs", "/console/wells/W-theirs/connections",
                 "/console/wells/W-theirs/series?metrics=motor_temp",
                 "/console/devices/W-theirs/edit"):
        assert (await client.get(page)).status_code == 404, page
    assert (await client.get("/console/wells/W-mine")).status_code == 200
    # What acts on the whole fleet or its accounts, whatever the role.
    for page in ("/console/users", "/console/api-keys", "/console/audit",
                 "/console/rules/new"):
        assert (await client.get(page)).status_code == 403, page
