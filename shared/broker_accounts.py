"""Broker accounts as data for Mosquitto's dynamic-security plugin.

Every account is bound at CONNECT to one client id, its own username (the plugin
refuses any other), so no account can take over another's persistent session.
Each account gets only the topics its role needs, checked at SUBSCRIBE as well as
at delivery: a device subscribes to nothing but its own `command` and `config`,
so it can neither join the ingestors' shared subscription nor snoop. Mosquitto
2.0's plugin has no `%u` patterns, so a device has a role of its own with its
literal topics. The same definitions serve the initial config file
(`render_config`, for compose and the local stack) and live provisioning over
`$CONTROL` (`shared/broker_control.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from shared.mqtt import (
    ALERTS_FILTER,
    ANY,
    CHILD_COMMAND_ACK_FILTER,
    COMMAND_ACK_FILTER,
    DEVICE_FILTERS,
    DIAGNOSTICS_FILTER,
    GATEWAY_FILTERS,
    NOTIFY_FILTER,
    STATUS_FILTER,
    TELEMETRY_FILTER,
    child_topic,
    command_ack_topic,
    command_topic,
    config_topic,
    gateway_topic,
    status_topic,
    telemetry_topic,
)
from shared.schemas import check_device_id
from shared.sparkplug.topics import NAMESPACE

ADMIN_ACCOUNT = "insa-admin"
SPARKPLUG_ACCOUNT = "insa-sparkplug"  # the ingestor's Sparkplug B host connection
SPARKPLUG_FILTER = f"{NAMESPACE}/#"
SPARKPLUG_STATE_FILTER = f"{NAMESPACE}/STATE/+"
SPARKPLUG_NCMD_FILTER = f"{NAMESPACE}/+/NCMD/+"
SPARKPLUG_DCMD_FILTER = f"{NAMESPACE}/+/DCMD/+/+"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
DYNSEC_ITERATIONS = 101  # Mosquitto's own default; the secrets themselves are random tokens

Acl = dict[str, Any]


def _read(*filters: str) -> list[Acl]:
    """Subscribe to and receive each filter (no `$share/...`: not granted to anyone)."""
    return [acl for f in filters for acl in (
        {"acltype": "subscribePattern", "topic": f, "allow": True},
        {"acltype": "publishClientReceive", "topic": f, "allow": True})]


def _write(*topics: str) -> list[Acl]:
    return [{"acltype": "publishClientSend", "topic": t, "allow": True} for t in topics]


BROKER_ADMIN = [*_write("$CONTROL/dynamic-security/#"),
                *_read("$CONTROL/dynamic-security/#")]

# Role name (= the first account of that service) → ACLs.
SERVICE_ROLES: dict[str, list[Acl]] = {
    # $CONTROL: its flood guard disables abusive device accounts. The plugin cannot narrow
    # that to some commands, so this account is as powerful as the admin's; its password
    # is a production secret like theirs (docs/architecture.md, "Flood guard").
    "insa-ingestor": [*_read(*DEVICE_FILTERS, *GATEWAY_FILTERS, "$SYS/broker/#",
                             CONTROL_RESPONSE_TOPIC),
                      *_write(CONTROL_TOPIC)],
    "insa-diagnostics": _write(DIAGNOSTICS_FILTER),
    # insa/notify/#: the topics rules choose for their own MQTT actions.
    "insa-alerts": [*_write(ALERTS_FILTER, NOTIFY_FILTER), *_read(DIAGNOSTICS_FILTER)],
    # The API provisions device accounts, so it administers the broker too; it publishes
    # device keys' HTTP-ingested readings on their telemetry topic (one ingest path).
    "insa-api": [*_write(command_topic(ANY), config_topic(ANY), TELEMETRY_FILTER,
                         child_topic(ANY, ANY, "command"), child_topic(ANY, ANY, "config")),
                 *_read(COMMAND_ACK_FILTER, CHILD_COMMAND_ACK_FILTER, STATUS_FILTER,
                        ALERTS_FILTER, DIAGNOSTICS_FILTER),
                 *BROKER_ADMIN],
    # Operators' dashboards and other systems that follow alerts and diagnoses.
    "insa-subscriber": _read(ALERTS_FILTER, NOTIFY_FILTER, DIAGNOSTICS_FILTER),
    # The ingestor's Sparkplug B host (its second connection, a clean session): every edge
    # node's messages, its own STATE, rebirth requests and commands, and the API's commands
    # and config for gateways' children, which it turns into DCMD/NCMD and answers.
    SPARKPLUG_ACCOUNT: [*_read(SPARKPLUG_FILTER, child_topic(ANY, ANY, "command"),
                              child_topic(ANY, ANY, "config")),
                       *_write(SPARKPLUG_STATE_FILTER, SPARKPLUG_NCMD_FILTER,
                               SPARKPLUG_DCMD_FILTER, CHILD_COMMAND_ACK_FILTER)],
    # The broker's container healthcheck: one $SYS topic, nothing else.
    "insa-health": _read("$SYS/broker/uptime"),
    ADMIN_ACCOUNT: BROKER_ADMIN,
}
SERVICE_ACCOUNTS = tuple(SERVICE_ROLES)

# Nothing is allowed unless a role grants it.
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False,
                  "subscribe": False, "unsubscribe": True}


def device_role_name(device_id: str) -> str:
    return f"device:{device_id}"


def device_role(device_id: str) -> dict[str, Any]:
    own = (command_topic(device_id), config_topic(device_id))
    return {"rolename": device_role_name(device_id),
            "acls": [*_write(telemetry_topic(device_id), telemetry_topic(device_id, ANY),
                             status_topic(device_id), command_ack_topic(device_id)),
                     *[{"acltype": "subscribeLiteral", "topic": t, "allow": True} for t in own],
                     *[{"acltype": "publishClientReceive", "topic": t, "allow": True}
                       for t in own]]}


def gateway_role_name(gateway_id: str) -> str:
    return f"gateway:{gateway_id}"


def gateway_role(gateway_id: str) -> dict[str, Any]:
    """A gateway publishes for its children, and hears their commands and config, in its
    own tree only; which children are its own, the ingestor checks (the broker cannot)."""
    own = (child_topic(gateway_id, ANY, "command"), child_topic(gateway_id, ANY, "config"))
    return {"rolename": gateway_role_name(gateway_id),
            "acls": [*_write(gateway_topic(gateway_id, "telemetry"),
                             gateway_topic(gateway_id, "status"),
                             child_topic(gateway_id, ANY, "telemetry"),
                             child_topic(gateway_id, ANY, "telemetry", ANY),
                             child_topic(gateway_id, ANY, "status"),
                             child_topic(gateway_id, ANY, "command", "ack")),
                     *_read(*own)]}


def sparkplug_node_role(gateway_id: str) -> dict[str, Any]:
    """A Sparkplug B edge node `<group>:<edge>`: its own births, deaths and data, its
    commands, and every host's STATE (it waits for the primary host's)."""
    group, edge = sparkplug_node_ids(gateway_id)
    node = f"{NAMESPACE}/{group}"
    return {"rolename": gateway_role_name(gateway_id),
            "acls": [*_write(*(f"{node}/{kind}/{edge}" for kind in ("NBIRTH", "NDEATH", "NDATA")),
                             *(f"{node}/{kind}/{edge}/+" for kind in
                               ("DBIRTH", "DDEATH", "DDATA"))),
                     *_read(f"{node}/NCMD/{edge}", f"{node}/DCMD/{edge}/+",
                            SPARKPLUG_STATE_FILTER)]}


def sparkplug_node_ids(gateway_id: str) -> tuple[str, str]:
    """(group id, edge node id) of a Sparkplug gateway's id `<group>:<edge>`."""
    parts = gateway_id.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"a Sparkplug gateway's id is <group>:<edge node>, not {gateway_id!r}")
    return parts[0], parts[1]


def hash_password(password: str) -> dict[str, Any]:
    """The plugin's password fields: PBKDF2-HMAC-SHA512 over a 12-byte salt."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, DYNSEC_ITERATIONS)
    return {"password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": DYNSEC_ITERATIONS}


def client_entry(username: str, password: str, role: str) -> dict[str, Any]:
    return {"username": username, "clientid": username, **hash_password(password),
            "roles": [{"rolename": role}]}


def service_role_of(username: str) -> str:
    """`insa-ingestor-2` is a second ingestor replica: same role, its own account."""
    for role in sorted(SERVICE_ROLES, key=len, reverse=True):
        if username == role or (username.startswith(role + "-")
                                and username[len(role) + 1:].isdigit()):
            return role
    raise ValueError(f"{username!r} is not a platform account name")


def render_config(passwords: dict[str, str], existing: dict[str, Any] | None = None,
                  devices: dict[str, str] | None = None) -> dict[str, Any]:
    """The plugin's config file: service roles and accounts (passwords reset from
    `passwords`), `devices` added, and every other client and role of `existing` kept
    (devices provisioned at run time)."""
    config = existing or {}
    roles = {r["rolename"]: r for r in config.get("roles", [])}
    clients = {c["username"]: c for c in config.get("clients", [])}
    for name, acls in SERVICE_ROLES.items():
        roles[name] = {"rolename": name, "acls": acls}
    for username, password in passwords.items():
        clients[username] = client_entry(username, password, service_role_of(username))
    for device_id, password in (devices or {}).items():
        check_device_id(device_id)
        roles[device_role_name(device_id)] = device_role(device_id)
        clients[device_id] = client_entry(device_id, password, device_role_name(device_id))
    return {"defaultACLAccess": DEFAULT_ACCESS, "roles": list(roles.values()),
            "clients": list(clients.values()), "groups": config.get("groups", [])}


def write_config_file(path: Path, passwords: dict[str, str],
                      devices: dict[str, str] | None = None) -> None:
    """Write (or update) the plugin's file atomically, mode 0600, keeping what provisioning
    added to it."""
    existing = json.loads(path.read_text()) if path.exists() else None
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(render_config(passwords, existing, devices), indent=1))
    tmp.chmod(0o600)
    os.replace(tmp, path)


# --- subscriber accounts (services/api/subscribers.py) -----------------------------------
# Operators' systems that consume alerts, diagnoses and rule notifications. A system has
# one role, `subscriber:<system>`, with the filters an admin chose, shared by its
# consumers; each consumer is an account of its own, `<system>.<consumer>`, bound to that
# name as client id like every account, so two consumers never knock each other off.
SUBSCRIBER_ROOTS = tuple(f.removesuffix("#") for f in (ALERTS_FILTER, DIAGNOSTICS_FILTER,
                                                       NOTIFY_FILTER))


def subscriber_role_name(name: str) -> str:
    return f"subscriber:{name}"


def subscriber_username(name: str, consumer: str) -> str:
    """Also the consumer's client id. Neither part may contain `.`, so it splits one way."""
    return f"{name}.{consumer}"


def subscriber_filter_problem(topic_filter: str) -> str | None:
    """Why a subscriber may not be granted this filter, or None: MQTT filter syntax, below
    SUBSCRIBER_ROOTS only (so never `$share/...`, `$SYS` nor a device's topics)."""
    root = next((r for r in SUBSCRIBER_ROOTS if topic_filter.startswith(r)), None)
    if root is None or topic_filter == root:
        return f"must lie below {', '.join(r + '...' for r in SUBSCRIBER_ROOTS)}"
    if any(ord(c) < 0x20 or c == "\x7f" for c in topic_filter):
        return "control characters are not allowed"
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "+" in level and level != "+":
            return "`+` must be a whole level"
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "`#` must be the whole last level"
    return None


def subscriber_role(name: str, filters: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Read only `filters` (checked again here: no role is ever granted more)."""
    for topic_filter in filters:
        problem = subscriber_filter_problem(topic_filter)
        if problem is not None:
            raise ValueError(f"{topic_filter!r}: {problem}")
    return {"rolename": subscriber_role_name(name), "acls": _read(*filters)}
