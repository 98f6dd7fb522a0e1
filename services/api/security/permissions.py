"""The one permission table: what each role may do. Every route names one permission
(`Depends(require(...))`), and a test walks every route with every role against a literal
copy of it (tests/services/api/test_rbac.py: change both)."""

from __future__ import annotations

from services.api.security.principal import ROLES

READERS = frozenset({"admin", "engineer", "operator", "viewer"})
ENGINEERS = frozenset({"admin", "engineer"})
OPERATORS = frozenset({"admin", "engineer", "operator"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "self": frozenset(ROLES),             # /auth/me, logout
    "users:manage": frozenset({"admin"}),
    "keys:manage": frozenset({"admin"}),
    "audit:read": frozenset({"admin"}),
    "devices:read": READERS,
    "devices:write": ENGINEERS,           # create, update, delete, credentials, config
    "gateways:read": READERS,
    "gateways:write": ENGINEERS,          # create, update, delete, credentials, assignment
    "telemetry:read": READERS,
    "telemetry:write": frozenset({"device"}),  # its own readings only
    "diagnoses:read": READERS,
    "diagnoses:analyze": ENGINEERS,
    "rules:read": READERS,
    "rules:write": ENGINEERS,
    "alerts:read": READERS,
    "alerts:manage": OPERATORS,           # acknowledge, resolve, shelve, unshelve
    "commands:read": READERS,
    "commands:send": OPERATORS,
    "live:read": READERS,
    "subscribers:manage": frozenset({"admin"}),  # subscriber systems' broker accounts
}


# What a principal scoped to one device (a key with a device_id) never has, whatever its
# role: these act on the whole fleet or on the platform's accounts, not on that device.
FLEET_ONLY = frozenset({"users:manage", "keys:manage", "audit:read", "rules:write",
                        "gateways:read", "gateways:write", "subscribers:manage"})


def allowed(role: str, permission: str, device_id: str | None = None) -> bool:
    if device_id is not None and permission in FLEET_ONLY:
        return False
    return role in PERMISSIONS[permission]
