"""Every route with every role against who may call it, spelled out below: a role not
listed gets 403 (and an audit row), a listed one gets past authorization, and nothing
answers 500. The expectations are written here from what the roles are for
(docs/architecture.md, Authorization), not read from the production table
(services/api/security/permissions.py), so a wrong entry there fails this test. Routes
are found on the app itself: one without a permission, or missing from `MAY_CALL`,
fails it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.routing import APIRoute

from services.api.app import PREFIX, ROUTERS
from services.api.security.principal import ROLES, USER_ROLES
from tests.fixtures.api import Api
from tests.utils.db import execute, fetch

PUBLIC = {"/auth/login", "/auth/refresh"}
DEVICE = "W-rbac"

ADMIN = frozenset({"admin"})
ENGINEERS = frozenset({"admin", "engineer"})
OPERATORS = frozenset({"admin", "engineer", "operator"})
READERS = frozenset({"admin", "engineer", "operator", "viewer"})  # every user, no device
EVERYONE = READERS | {"device"}
DEVICE_ONLY = frozenset({"device"})

# Operation (method and path below /api/v1) -> the roles that may call it; any other
# role gets 403. Admins alone manage accounts and read the audit trail; engineers also
# change devices and rules; operators also handle alerts and send commands; viewers
# read; a device key only writes its own telemetry (and sees who it is).
MAY_CALL: dict[str, frozenset[str]] = {
    "POST /auth/logout": EVERYONE,
    "GET /auth/me": EVERYONE,
    "GET /users": ADMIN,
    "POST /users": ADMIN,
    "GET /users/{user_id}": ADMIN,
    "PATCH /users/{user_id}": ADMIN,
    "DELETE /users/{user_id}": ADMIN,
    "GET /api-keys": ADMIN,
    "POST /api-keys": ADMIN,
    "DELETE /api-keys/{key_id}": ADMIN,
    "GET /audit": ADMIN,
    "GET /subscribers": ADMIN,
    "POST /subscribers": ADMIN,
    "GET /subscribers/{name}": ADMIN,
    "PATCH /subscribers/{name}": ADMIN,
    "DELETE /subscribers/{name}": ADMIN,
    "POST /subscribers/{name}/consumers": ADMIN,
    "POST /subscribers/{name}/consumers/{consumer}/rotate": ADMIN,
    "DELETE /subscribers/{name}/consumers/{consumer}": ADMIN,
    "GET /devices": READERS,
    "GET /devices/{device_id}": READERS,
    "POST /devices": ENGINEERS,
    "PATCH /devices/{device_id}": ENGINEERS,
    "DELETE /devices/{device_id}": ENGINEERS,
    "POST /devices/{device_id}/credentials": ENGINEERS,
    "DELETE /devices/{device_id}/credentials": ENGINEERS,
    "POST /devices/{device_id}/config": ENGINEERS,
    "GET /gateways": READERS,
    "GET /gateways/{gateway_id}": READERS,
    "POST /gateways": ENGINEERS,
    "PATCH /gateways/{gateway_id}": ENGINEERS,
    "DELETE /gateways/{gateway_id}": ENGINEERS,
    "POST /gateways/{gateway_id}/credentials": ENGINEERS,
    "DELETE /gateways/{gateway_id}/credentials": ENGINEERS,
    "GET /gateways/{gateway_id}/devices": READERS,
    "POST /gateways/{gateway_id}/devices": ENGINEERS,
    "DELETE /gateways/{gateway_id}/devices/{device_id}": ENGINEERS,
    "GET /devices/{device_id}/telemetry": READERS,
    "GET /devices/{device_id}/telemetry/latest": READERS,
    "GET /devices/{device_id}/telemetry/aggregate": READERS,
    "GET /devices/{device_id}/telemetry/export.csv": READERS,
    "GET /telemetry/latest": READERS,
    "GET /devices/{device_id}/rejects": READERS,
    "GET /rejects/summary": READERS,
    "POST /telemetry": DEVICE_ONLY,
    "POST /telemetry/batch": DEVICE_ONLY,
    "GET /analytics/wells/{device_id}/summary": READERS,
    "GET /analytics/wells/{device_id}/performance": READERS,
    "GET /analytics/fleet": READERS,
    "GET /analytics/rankings": READERS,
    "GET /devices/{device_id}/diagnoses": READERS,
    "GET /diagnoses/current": READERS,
    "GET /diagnoses/critical": READERS,
    "POST /diagnostics/analyze": ENGINEERS,
    "GET /rules": READERS,
    "GET /rules/{rule_id}": READERS,
    "POST /rules": ENGINEERS,
    "PUT /rules/{rule_id}": ENGINEERS,
    "PATCH /rules/{rule_id}": ENGINEERS,
    "DELETE /rules/{rule_id}": ENGINEERS,
    "POST /rules/test": ENGINEERS,
    "POST /rules/{rule_id}/test": ENGINEERS,
    "GET /alerts": READERS,
    "GET /alerts/{alert_id}": READERS,
    "POST /alerts/{alert_id}/acknowledge": OPERATORS,
    "POST /alerts/{alert_id}/resolve": OPERATORS,
    "POST /alerts/{alert_id}/shelve": OPERATORS,
    "POST /alerts/{alert_id}/unshelve": OPERATORS,
    "GET /devices/{device_id}/commands": READERS,
    "POST /devices/{device_id}/commands": OPERATORS,
    "GET /commands/{command_id}": READERS,
    "GET /live/events": READERS,
}

# What a key scoped to one device is refused whatever its role: the operations on the
# platform's accounts, the audit trail, the fleet's rules and its gateways.
FLEET_ONLY = frozenset({
    "GET /users", "POST /users", "GET /users/{user_id}", "PATCH /users/{user_id}",
    "DELETE /users/{user_id}", "GET /api-keys", "POST /api-keys", "DELETE /api-keys/{key_id}",
    "GET /audit", "POST /rules", "PUT /rules/{rule_id}", "PATCH /rules/{rule_id}",
    "DELETE /rules/{rule_id}", "POST /rules/test", "POST /rules/{rule_id}/test",
    "GET /gateways", "GET /gateways/{gateway_id}", "POST /gateways",
    "PATCH /gateways/{gateway_id}", "DELETE /gateways/{gateway_id}",
    "POST /gateways/{gateway_id}/credentials", "DELETE /gateways/{gateway_id}/credentials",
    "GET /gateways/{gateway_id}/devices", "POST /gateways/{gateway_id}/devices",
    "DELETE /gateways/{gateway_id}/devices/{device_id}",
    "GET /subscribers", "POST /subscribers", "GET /subscribers/{name}",
    "PATCH /subscribers/{name}", "DELETE /subscribers/{name}",
    "POST /subscribers/{name}/consumers", "POST /subscribers/{name}/consumers/{consumer}/rotate",
    "DELETE /subscribers/{name}/consumers/{consumer}",
})


def permission_of(route: APIRoute) -> str | None:
    """The `require(...)` dependency's permission, found anywhere in the route's tree."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        found = getattr(dependency.call, "permission", None)
        if found is not None:
            return str(found)
        pending.extend(dependency.dependencies)
    return None


def api_routes(api: Api) -> list[APIRoute]:
    """Every route of the app's routers (paths below /api/v1); the OpenAPI schema must list
    nothing else, so no route escapes the walk."""
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    documented = {(path, method.upper()) for path, item in api.app.openapi()["paths"].items()
                  for method in item}
    assert documented == {(PREFIX + r.path, m) for r in routes for m in methods(r)}
    return routes


def methods(route: APIRoute) -> set[str]:
    """FastAPI gives every APIRoute its methods (starlette's Route types them optional)."""
    assert route.methods is not None
    return route.methods


def concrete_path(route: APIRoute) -> str:
    """Path parameters filled with values of their type that name nothing stored."""
    path = route.path
    for param in route.dependant.path_params:
        annotation = param.field_info.annotation
        samples: dict[object, Any] = {int: 999_999, uuid.UUID: uuid.uuid4()}
        value = samples.get(annotation, DEVICE)
        path = path.replace("{" + param.name + "}", str(value))
    return path


async def test_every_route_names_one_permission(api: Api) -> None:
    routes = api_routes(api)
    assert len(routes) >= 10
    missing = [f"{sorted(methods(r))} {r.path}" for r in routes
               if r.path not in PUBLIC and permission_of(r) is None]
    assert missing == [], f"routes without require(...): {missing}"


async def test_every_route_for_every_role(api: Api, db_url: str) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ($1)", DEVICE)
    clients = {role: await api.user(role) for role in USER_ROLES}
    clients["device"] = api.client(key=await api.key("device", device_id=DEVICE))
    wrong: list[str] = []
    denied = 0
    # Deleting the device deletes its key: that request comes last, the device role first.
    calls = sorted(((m, r) for r in api_routes(api) for m in methods(r)),
                   key=lambda c: (c[0] == "DELETE" and c[1].path == "/devices/{device_id}",
                                  c[1].path, c[0]))
    walked = {f"{method} {route.path}" for method, route in calls
              if route.path not in PUBLIC}
    assert walked == set(MAY_CALL), "MAY_CALL must list every operation, and only those"
    for method, route in calls:
        permission = permission_of(route)
        if permission is None:
            continue
        path = concrete_path(route)
        for role in reversed(ROLES):
            response = await clients[role].request(method, path, json={})
            ok = role in MAY_CALL[f"{method} {route.path}"]
            if response.status_code >= 500 or \
                    (ok and response.status_code in (401, 403)) or \
                    (not ok and response.status_code != 403):
                wrong.append(f"{role} {method} {path} ({permission}): "
                             f"{response.status_code} {response.text[:120]}")
            denied += not ok
    assert wrong == []
    rows = await fetch(db_url, "SELECT count(*) AS n FROM audit_log "
                               "WHERE action = 'permission.denied' AND outcome = 'failure'")
    assert rows[0]["n"] == denied


async def test_no_credentials_is_401_on_every_protected_route(api: Api) -> None:
    anon = api.client()
    for route in api_routes(api):
        if route.path in PUBLIC:
            continue
        for method in methods(route):
            response = await anon.request(method, concrete_path(route), json={})
            assert response.status_code == 401, f"{method} {route.path}"
            assert response.json()["error"]["code"] == "unauthorized"


async def test_a_key_scoped_to_a_device_never_acts_on_the_fleet(api: Api, db_url: str) -> None:
    """Whatever its role: no users, keys, audit trail or rule changes; the rest is the
    role's, limited to its device by the routes themselves."""
    assert FLEET_ONLY <= set(MAY_CALL)
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ($1)", DEVICE)
    scoped = {role: api.client(key=await api.key(role, device_id=DEVICE))
              for role in ("admin", "engineer")}
    for method, route in ((m, r) for r in api_routes(api) for m in sorted(methods(r))):
        permission = permission_of(route)
        if permission is None or (method == "DELETE" and route.path == "/devices/{device_id}"):
            continue
        for role, client in scoped.items():
            response = await client.request(method, concrete_path(route), json={})
            assert response.status_code < 500, f"{role} {method} {route.path}"
            if f"{method} {route.path}" in FLEET_ONLY:
                assert response.status_code == 403, f"{role} {method} {route.path}"
