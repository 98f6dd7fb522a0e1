"""Subscriber accounts, managed by admins: a broker account for each consumer of each
system that reads alerts, diagnoses and rule notifications (services/api/subscribers.py).
Passwords are shown once, at a consumer's creation or rotation. Each change and its
broker commands happen in one transaction: when the broker refuses or cannot be told,
nothing is recorded."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.api import audit
from services.api.deps import Res, require
from services.api.errors import BROKER_REFUSED
from services.api.security.principal import Principal
from services.api.subscribers import (
    COLUMNS,
    CONSUMER_PATTERN,
    MAX_CONSUMERS,
    MAX_TOPICS,
    NAME_PATTERN,
    TOPICS_HELP,
    ConsumerCredentials,
    SubscriberOut,
    check_name,
    checked_consumers,
    checked_topics,
    consumers_of,
    credentials,
    grant,
    issue,
    locked,
    own_account,
    regrant,
    revoke,
    subscriber_out,
    ungrant,
)
from shared.broker_accounts import subscriber_username
from shared.errors import Conflict, NotFound, ValidationFailed

router = APIRouter(prefix="/subscribers", tags=["subscribers"])
Admin = Annotated[Principal, Depends(require("subscribers:manage"))]
Consumer = Annotated[str, Field(pattern=CONSUMER_PATTERN, examples=["a"])]
TopicFilter = Annotated[str, Field(min_length=1, max_length=256, examples=["insa/alerts/#"])]
DESCRIPTION_MAX = 500


class SubscriberIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, examples=["historian"], description=(
        "No `.` and no `insa-` prefix; its consumers' MQTT usernames are `<name>.<consumer>`"))
    description: str | None = Field(None, max_length=DESCRIPTION_MAX,
                                    examples=["Plant historian"])
    topics: list[TopicFilter] = Field(min_length=1, max_length=MAX_TOPICS,
                                      description=TOPICS_HELP,
                                      examples=[["insa/alerts/#", "insa/diagnostics/#"]])
    consumers: list[Consumer] = Field(["1"], min_length=1, max_length=MAX_CONSUMERS,
                                      examples=[["a", "b"]])


class NewSubscriber(SubscriberOut):
    credentials: list[ConsumerCredentials] = Field(
        description="One per consumer; the passwords are shown this once")


class SubscriberPatch(BaseModel):
    description: str | None = Field(None, max_length=DESCRIPTION_MAX,
                                    description="null clears it")
    topics: list[TopicFilter] | None = Field(None, min_length=1, max_length=MAX_TOPICS,
                                             description="Replaces the filters")


class ConsumerIn(BaseModel):
    name: Consumer


@router.get("", response_model=list[SubscriberOut], summary="List subscriber systems")
async def list_subscribers(res: Res, _: Admin) -> list[SubscriberOut]:
    rows = await res.pool.fetch(f"SELECT {COLUMNS} FROM subscribers ORDER BY name")
    consumers = await consumers_of(res.pool, [r["name"] for r in rows])
    return [subscriber_out(r, consumers[r["name"]]) for r in rows]


@router.get("/{name}", response_model=SubscriberOut, summary="Get a subscriber system",
            responses={404: {}})
async def get_subscriber(name: str, res: Res, _: Admin) -> SubscriberOut:
    row = await res.pool.fetchrow(f"SELECT {COLUMNS} FROM subscribers WHERE name = $1", name)
    if row is None:
        raise NotFound(f"subscriber {name} does not exist")
    return subscriber_out(row, (await consumers_of(res.pool, [name]))[name])


@router.post("", response_model=NewSubscriber, status_code=201,
             summary="Create a subscriber system and its consumers' MQTT accounts",
             description="Each consumer connects with username and client id "
                         "`<name>.<consumer>` and its password, shown this once, and may "
                         "subscribe to `topics` only. 409 when the system exists, or a "
                         "broker account of a consumer's name exists that is not this "
                         "system's (a device, a gateway): it is never taken over.",
             responses={409: {}, **BROKER_REFUSED})
async def create_subscriber(body: SubscriberIn, res: Res, who: Admin) -> NewSubscriber:
    check_name(body.name)
    topics = checked_topics(body.topics)
    consumers = checked_consumers(body.consumers)
    async with res.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                f"INSERT INTO subscribers (name, description, topics, created_by) "
                f"VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}",
                body.name, body.description, topics, who.actor)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"subscriber {body.name} already exists (names differing only "
                           "in case are refused)") from None
        await conn.executemany("INSERT INTO subscriber_consumers (subscriber, name) "
                               "VALUES ($1, $2)", [(body.name, c) for c in consumers])
        # Every name checked before anything is made: a collision leaves the broker as it was.
        exists = {c: await own_account(res.broker, body.name, c) for c in consumers}
        await grant(res.broker, body.name, topics)
        issued = [credentials(body.name, c, await issue(res.broker, body.name, c, exists[c]))
                  for c in consumers]
        await audit.record(conn, who.actor, "subscriber.create", body.name, topics=topics,
                           consumers=consumers)
        found = await consumers_of(conn, [body.name])
    return NewSubscriber(**subscriber_out(row, found[body.name]).model_dump(),
                         credentials=issued)


@router.patch("/{name}", response_model=SubscriberOut, summary="Change a subscriber system",
              description="New `topics` apply at once: connected consumers stay connected "
                          "and receive only what the new filters allow (a filter newly "
                          "granted needs a new SUBSCRIBE).",
              responses={404: {}, **BROKER_REFUSED})
async def update_subscriber(name: str, body: SubscriberPatch, res: Res, who: Admin
                            ) -> SubscriberOut:
    given = {f for f in body.model_fields_set if f == "description" or getattr(body, f)}
    if not given:
        raise ValidationFailed("empty_patch", "nothing to change: give description or topics")
    topics = checked_topics(body.topics) if body.topics is not None else None
    async with res.pool.acquire() as conn, conn.transaction():
        row = await locked(conn, name)
        row = await conn.fetchrow(
            f"UPDATE subscribers SET description = $2, topics = $3, updated_at = now() "
            f"WHERE name = $1 RETURNING {COLUMNS}", name,
            body.description if "description" in given else row["description"],
            topics if topics is not None else row["topics"])
        if topics is not None:
            await regrant(res.broker, name, topics)
        await audit.record(conn, who.actor, "subscriber.update", name, changed=sorted(given),
                           topics=topics)
        found = await consumers_of(conn, [name])
    return subscriber_out(row, found[name])


@router.delete("/{name}", status_code=204, summary="Delete a subscriber system",
               description="Revokes every consumer: their broker accounts and the system's "
                           "role are deleted, and their connections dropped.",
               responses={404: {}, **BROKER_REFUSED})
async def delete_subscriber(name: str, res: Res, who: Admin) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        await locked(conn, name)
        consumers = [r["name"] for r in (await consumers_of(conn, [name]))[name]]
        await conn.execute("DELETE FROM subscribers WHERE name = $1", name)
        for consumer in consumers:
            await revoke(res.broker, name, consumer)
        await ungrant(res.broker, name)
        await audit.record(conn, who.actor, "subscriber.delete", name, consumers=consumers)


@router.post("/{name}/consumers", response_model=ConsumerCredentials, status_code=201,
             summary="Add a consumer to a subscriber system",
             description="Its own MQTT account, `<name>.<consumer>` as username and client "
                         "id, with the system's topics; the password is shown this once.",
             responses={404: {}, 409: {}, **BROKER_REFUSED})
async def add_consumer(name: str, body: ConsumerIn, res: Res, who: Admin
                       ) -> ConsumerCredentials:
    async with res.pool.acquire() as conn, conn.transaction():
        await locked(conn, name)
        count = await conn.fetchval("SELECT count(*) FROM subscriber_consumers "
                                    "WHERE subscriber = $1", name)
        if count >= MAX_CONSUMERS:
            raise Conflict(f"subscriber {name} has {count} consumers, the most allowed")
        try:
            await conn.execute("INSERT INTO subscriber_consumers (subscriber, name) "
                               "VALUES ($1, $2)", name, body.name)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"consumer {body.name} of {name} already exists") from None
        password = await issue(res.broker, name, body.name)
        await audit.record(conn, who.actor, "subscriber.consumer.create", name,
                           consumer=body.name, username=subscriber_username(name, body.name))
    return credentials(name, body.name, password)


@router.post("/{name}/consumers/{consumer}/rotate", response_model=ConsumerCredentials,
             summary="Give a consumer a new password",
             description="Shown this once; the old password stops working and the "
                         "consumer's connection is dropped.",
             responses={404: {}, 409: {}, **BROKER_REFUSED})
async def rotate_consumer(name: str, consumer: str, res: Res, who: Admin
                          ) -> ConsumerCredentials:
    async with res.pool.acquire() as conn, conn.transaction():
        await locked(conn, name)
        status = await conn.execute("UPDATE subscriber_consumers SET rotated_at = now() "
                                    "WHERE subscriber = $1 AND name = $2", name, consumer)
        if status == "UPDATE 0":
            raise NotFound(f"consumer {consumer} of {name} does not exist")
        password = await issue(res.broker, name, consumer)
        await audit.record(conn, who.actor, "subscriber.rotate", name, consumer=consumer,
                           username=subscriber_username(name, consumer))
    return credentials(name, consumer, password)


@router.delete("/{name}/consumers/{consumer}", status_code=204,
               summary="Revoke a consumer",
               description="Deletes its broker account: it is disconnected and cannot "
                           "connect again.", responses={404: {}, **BROKER_REFUSED})
async def revoke_consumer(name: str, consumer: str, res: Res, who: Admin) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        await locked(conn, name)
        status = await conn.execute("DELETE FROM subscriber_consumers "
                                    "WHERE subscriber = $1 AND name = $2", name, consumer)
        if status == "DELETE 0":
            raise NotFound(f"consumer {consumer} of {name} does not exist")
        had_account = await revoke(res.broker, name, consumer)
        await audit.record(conn, who.actor, "subscriber.revoke", name, consumer=consumer,
                           username=subscriber_username(name, consumer),
                           broker_account=had_account)
