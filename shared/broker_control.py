"""Administer broker accounts at run time over `$CONTROL/dynamic-security/v1` (Mosquitto's
dynamic-security plugin), on a service's own connection (shared/mqtt_connection.py).

Every admin client receives every answer on the response topic; a client's own are the
ones carrying the correlationData it made. The command builders are plain functions, so
the local stack's synchronous admin (devtools/stack/broker_admin.py) sends the same ones.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import orjson

from shared.broker_accounts import (
    CONTROL_RESPONSE_TOPIC,
    CONTROL_TOPIC,
    device_role,
    device_role_name,
    gateway_role,
    gateway_role_name,
    sparkplug_node_role,
)
from shared.errors import Conflict, DependencyUnavailable, InsaError, NotFound
from shared.mqtt_connection import MqttConnection
from shared.schemas import check_device_id

Command = dict[str, Any]


class BrokerAdminError(InsaError):
    code = "broker_admin"


class BrokerControl:
    """Dynamic-security commands over `connection`, each batch answered by the broker."""

    def __init__(self, connection: MqttConnection, timeout: float = 10.0) -> None:
        self.connection = connection
        self.timeout = timeout
        self._waiting: dict[str, tuple[asyncio.Future[None], list[Command], int]] = {}
        connection.handle(CONTROL_RESPONSE_TOPIC, self.on_response)

    async def execute(self, *commands: Command) -> list[Command]:
        """Run commands in order; raise on the first that failed (later ones still ran)."""
        key = uuid.uuid4().hex
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answers: list[Command] = []
        self._waiting[key] = (done, answers, len(commands))
        try:
            await self.connection.publish(CONTROL_TOPIC, encode_commands(commands, key))
            try:
                await asyncio.wait_for(done, self.timeout)
            except TimeoutError:
                raise DependencyUnavailable("the broker did not answer") from None
        finally:
            self._waiting.pop(key, None)
        raise_for_errors(commands, answers)
        return answers

    def on_response(self, payload: bytes) -> None:
        for response in decode_responses(payload):
            waiting = self._waiting.get(response.get("correlationData", ""))
            if waiting is None:
                continue
            done, answers, expected = waiting
            answers.append(response)
            if len(answers) >= expected and not done.done():
                done.set_result(None)

    async def create_device(self, device_id: str) -> str:
        """A device account bound to its own id and topics; returns its password."""
        password = new_password()
        await self.execute(*device_account(device_id, password))
        return password

    async def rotate_password(self, username: str) -> str:
        password = new_password()
        await self.execute(set_password(username, password))
        return password

    async def delete_device(self, device_id: str) -> None:
        await self.execute(*delete_device_account(device_id))

    async def create_gateway(self, gateway_id: str, sparkplug: bool = False) -> str:
        """A gateway's account, bound to its own client id: its own tree, or a Sparkplug
        edge node's topics; its password."""
        check_device_id(gateway_id)
        password = new_password()
        role = sparkplug_node_role(gateway_id) if sparkplug else gateway_role(gateway_id)
        await self.execute(*role_account(gateway_id, role, password))
        return password

    async def delete_gateway(self, gateway_id: str) -> None:
        await self.execute(*delete_account(gateway_id, gateway_role_name(gateway_id)))


# --- commands ----------------------------------------------------------------------------
def new_password() -> str:
    return secrets.token_urlsafe(24)


def device_account(device_id: str, password: str) -> tuple[Command, ...]:
    """A device's role (its own topics) and its account, bound to its own client id."""
    check_device_id(device_id)
    return role_account(device_id, device_role(device_id), password)


def role_account(username: str, role: dict[str, Any], password: str) -> tuple[Command, ...]:
    """A role of its own and the account holding it, bound to its own client id."""
    return ({"command": "createRole", **role},
            {"command": "createClient", "username": username, "password": password,
             "clientid": username, "roles": [{"rolename": role["rolename"]}]})


def service_account(username: str, role: str, password: str) -> Command:
    """Another replica's account for an existing service role (its own client id)."""
    return {"command": "createClient", "username": username, "password": password,
            "clientid": username, "roles": [{"rolename": role}]}


def set_password(username: str, password: str) -> Command:
    return {"command": "setClientPassword", "username": username, "password": password}


def delete_device_account(device_id: str) -> tuple[Command, ...]:
    return delete_account(device_id, device_role_name(device_id))


def delete_account(username: str, rolename: str) -> tuple[Command, ...]:
    return ({"command": "deleteClient", "username": username},
            {"command": "deleteRole", "rolename": rolename})


def encode_commands(commands: tuple[Command, ...], key: str) -> bytes:
    """One `$CONTROL` request; every command carries `key` so its answer can be matched."""
    return orjson.dumps({"commands": [{**c, "correlationData": key} for c in commands]})


def decode_responses(payload: bytes) -> list[Command]:
    """The answers in one response message (any admin client's; match by correlationData)."""
    try:
        responses = orjson.loads(payload)["responses"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return []
    return [r for r in responses if isinstance(r, dict)] if isinstance(responses, list) else []


def raise_for_errors(commands: tuple[Command, ...], answers: list[Command]) -> None:
    for command, answer in zip(commands, answers, strict=True):
        if "error" in answer:
            raise _error(command, answer["error"])


def _error(command: Command, message: str) -> InsaError:
    what = f"{command['command']}: {message}"
    lowered = message.lower()
    if "already exists" in lowered:
        return Conflict(what)
    if "not found" in lowered:
        return NotFound(what)
    return BrokerAdminError(what)


# --- accounts of other roles (subscriber systems: services/api/subscribers.py) -----------
def create_role(role: dict[str, Any]) -> Command:
    return {"command": "createRole", **role}


def modify_role(role: dict[str, Any]) -> Command:
    """Replaces the role's ACLs. Its clients stay connected; what they receive is checked
    against the new ACLs at once, and a filter newly granted needs a new SUBSCRIBE."""
    return {"command": "modifyRole", **role}


def delete_role(rolename: str) -> Command:
    """Its clients keep their accounts, with nothing allowed."""
    return {"command": "deleteRole", "rolename": rolename}


def client_account(username: str, rolename: str, password: str) -> Command:
    """An account with one role, bound to its own username as client id. Refused (Conflict)
    when the username is taken: it never takes over another account."""
    return {"command": "createClient", "username": username, "password": password,
            "clientid": username, "roles": [{"rolename": rolename}]}


def get_client(username: str) -> Command:
    return {"command": "getClient", "username": username}


def client_roles(answer: Command) -> list[str]:
    """The role names in a getClient answer."""
    client = answer.get("data", {}).get("client", {})
    return [r.get("rolename") for r in client.get("roles", [])]


def delete_client(username: str) -> Command:
    """Deletes the account; its connection is dropped."""
    return {"command": "deleteClient", "username": username}
