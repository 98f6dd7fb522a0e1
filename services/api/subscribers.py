"""What the subscriber routes share: a subscriber system as the API shows it, the checks of
its name and topic filters, and its broker accounts.

A system (a historian, a pager, a SCADA bridge) reads alerts, diagnoses and rule
notifications through one broker role, `subscriber:<name>`, granting the filters an admin
chose; each of its consumers is a broker account of its own, `<name>.<consumer>`, which
is also its client id (the broker binds every account to its own), so several consumers
run side by side. Accounts and password hashes live in the broker only; the tables
(migration 0012) keep what the API shows, never a password.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from shared.broker_accounts import (
    SUBSCRIBER_ROOTS,
    subscriber_filter_problem,
    subscriber_role,
    subscriber_role_name,
    subscriber_username,
)
from shared.broker_control import (
    BrokerControl,
    client_account,
    client_roles,
    create_role,
    delete_client,
    delete_role,
    get_client,
    modify_role,
    new_password,
    set_password,
)
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.mqtt import RESERVED_PREFIX, is_reserved_name

# The device-id pattern without `.`, which separates the system from the consumer.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_:-]{0,127}$"
CONSUMER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
MAX_TOPICS = 20
MAX_CONSUMERS = 32
COLUMNS = "name, description, topics, created_at, created_by, updated_at"


class ConsumerOut(BaseModel):
    name: str = Field(examples=["a"])
    username: str = Field(description="The MQTT username, also its client id: "
                                      "`<system>.<consumer>`", examples=["historian.a"])
    created_at: datetime
    rotated_at: datetime | None = Field(description="Its last new password, if any")


class SubscriberOut(BaseModel):
    name: str = Field(examples=["historian"])
    description: str | None = Field(examples=["Plant historian, OSIsoft PI connector"])
    topics: list[str] = Field(examples=[["insa/alerts/#", "insa/diagnostics/#"]])
    consumers: list[ConsumerOut]
    created_at: datetime
    created_by: str = Field(examples=["user:admin"])
    updated_at: datetime


class ConsumerCredentials(BaseModel):
    username: str = Field(examples=["historian.a"])
    client_id: str = Field(description="The same as the username: the broker refuses any "
                                       "other", examples=["historian.a"])
    password: str = Field(description="Shown this once; the API does not keep it")


def credentials(name: str, consumer: str, password: str) -> ConsumerCredentials:
    username = subscriber_username(name, consumer)
    return ConsumerCredentials(username=username, client_id=username, password=password)


def subscriber_out(row: asyncpg.Record, consumers: list[asyncpg.Record]) -> SubscriberOut:
    return SubscriberOut(**dict(row), consumers=[
        ConsumerOut(name=c["name"], username=subscriber_username(row["name"], c["name"]),
                    created_at=c["created_at"], rotated_at=c["rotated_at"])
        for c in consumers])


async def consumers_of(conn: asyncpg.Connection | asyncpg.Pool, names: list[str]
                       ) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch("SELECT subscriber, name, created_at, rotated_at "
                            "FROM subscriber_consumers WHERE subscriber = ANY($1) "
                            "ORDER BY subscriber, name", names)
    found: dict[str, list[asyncpg.Record]] = {n: [] for n in names}
    for row in rows:
        found[row["subscriber"]].append(row)
    return found


async def locked(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    """The system's row, locked for this transaction: changes to one system and its
    broker accounts happen one at a time."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM subscribers WHERE name = $1 "
                              "FOR UPDATE", name)
    if row is None:
        raise NotFound(f"subscriber {name} does not exist")
    return row


def check_name(name: str) -> None:
    if is_reserved_name(name):
        raise ValidationFailed("reserved_name", f"name: names starting with "
                               f"{RESERVED_PREFIX!r} (in any case) are the platform's own",
                               field="name")


def checked_topics(topics: list[str]) -> list[str]:
    """The filters, each checked (422 naming `topics.<n>`), without repeats."""
    for i, topic_filter in enumerate(topics):
        problem = subscriber_filter_problem(topic_filter)
        if problem is not None:
            raise ValidationFailed("bad_topic_filter", f"topics.{i}: {topic_filter!r}: "
                                   f"{problem}", field=f"topics.{i}")
    return list(dict.fromkeys(topics))


def checked_consumers(consumers: list[str]) -> list[str]:
    if len(set(consumers)) != len(consumers):
        raise ValidationFailed("duplicate_consumer", "consumers: a name is given twice",
                               field="consumers")
    return consumers


TOPICS_HELP = ("MQTT filters below " + ", ".join(f"`{r}`" for r in SUBSCRIBER_ROOTS) +
               "; `+` a whole level, `#` the whole last one")


# --- broker accounts ---------------------------------------------------------------------
async def own_account(broker: BrokerControl, name: str, consumer: str) -> bool:
    """True if the broker has this consumer's account (its one role is the system's);
    False if none; Conflict if the username is another account's (a device, a gateway,
    a service), which a subscriber must never take over."""
    username = subscriber_username(name, consumer)
    try:
        [answer] = await broker.execute(get_client(username))
    except NotFound:
        return False
    roles = client_roles(answer)
    if roles != [subscriber_role_name(name)]:
        raise Conflict(f"broker account {username} exists and is not subscriber {name}'s "
                       f"(roles {roles}); it is left alone")
    return True


async def grant(broker: BrokerControl, name: str, topics: list[str]) -> None:
    """Create the system's role, or replace its ACLs when one is left from an attempt
    that failed later (nothing else makes `subscriber:` roles)."""
    role = subscriber_role(name, topics)
    try:
        await broker.execute(create_role(role))
    except Conflict:
        await broker.execute(modify_role(role))


async def regrant(broker: BrokerControl, name: str, topics: list[str]) -> None:
    """New ACLs for a system's role, live: connected consumers stay, and receive only
    what the new filters allow."""
    await broker.execute(modify_role(subscriber_role(name, topics)))


async def issue(broker: BrokerControl, name: str, consumer: str, exists: bool | None = None
                ) -> str:
    """A new password for the consumer's account, created when it has none (`exists`:
    what own_account answered already). Setting a password drops its connection."""
    if exists is None:
        exists = await own_account(broker, name, consumer)
    username = subscriber_username(name, consumer)
    password = new_password()
    if exists:
        await broker.execute(set_password(username, password))
    else:  # refused, never overwritten, if another account took the name meanwhile
        await broker.execute(client_account(username, subscriber_role_name(name), password))
    return password


async def revoke(broker: BrokerControl, name: str, consumer: str) -> bool:
    """Delete the consumer's account (its connection is dropped); False when it had none,
    or the name is another account's, which is left alone."""
    try:
        if not await own_account(broker, name, consumer):
            return False
    except Conflict:
        return False
    try:
        await broker.execute(delete_client(subscriber_username(name, consumer)))
    except NotFound:
        return False
    return True


async def ungrant(broker: BrokerControl, name: str) -> None:
    try:
        await broker.execute(delete_role(subscriber_role_name(name)))
    except NotFound:
        pass
