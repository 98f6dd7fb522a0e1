"""Users, managed by admins. Passwords are Argon2id hashes; a change of password, role or
status revokes the user's sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.api import audit
from services.api.deps import Res, require
from services.api.security.passwords import MIN_LENGTH, hash_password
from services.api.security.principal import Principal
from services.api.security.tokens import Tokens
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.mqtt import RESERVED_PREFIX, is_reserved_name

router = APIRouter(prefix="/users", tags=["users"])
Admin = Annotated[Principal, Depends(require("users:manage"))]
UserRole = Literal["admin", "engineer", "operator", "viewer"]
COLUMNS = "id, username, role, disabled, created_at, updated_at"
CREATE_LOCK = 0x494E5341_55534552  # "INSAUSER": one user created at a time


class UserIn(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", examples=["ana"])
    password: str = Field(min_length=MIN_LENGTH, max_length=1024)
    role: UserRole = Field(examples=["operator"])


class UserPatch(BaseModel):
    password: str | None = Field(None, min_length=MIN_LENGTH, max_length=1024)
    role: UserRole | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    updated_at: datetime


@router.get("", response_model=list[UserOut], summary="List users")
async def list_users(res: Res, _: Admin) -> list[UserOut]:
    rows = await res.pool.fetch(f"SELECT {COLUMNS} FROM users ORDER BY username")
    return [UserOut(**dict(r)) for r in rows]


@router.post("", response_model=UserOut, status_code=201, summary="Create a user",
             responses={409: {}})
async def create_user(body: UserIn, res: Res, who: Admin) -> UserOut:
    if is_reserved_name(body.username):
        raise ValidationFailed("reserved_name", f"username: names starting with "
                               f"{RESERVED_PREFIX!r} (in any case) are the platform's own",
                               field="username")
    password_hash = await hash_password(body.password)
    async with res.pool.acquire() as conn, conn.transaction():
        # Names are unique ignoring case (`ADMIN` would pass for `admin` in a log or the
        # audit trail). The table's unique index compares exactly, so the check runs
        # under a lock: two creations cannot both pass it.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CREATE_LOCK)
        taken = await conn.fetchval("SELECT username FROM users "
                                    "WHERE lower(username) = lower($1)", body.username)
        if taken is not None:
            raise Conflict(f"user {taken} already exists" + (
                "" if taken == body.username else "; names differing only in case are refused"))
        try:
            row = await conn.fetchrow(
                f"INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) "
                f"RETURNING {COLUMNS}", body.username, password_hash, body.role)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"user {body.username} already exists") from None
        await audit.record(conn, who.actor, "user.create", body.username, role=body.role)
    return UserOut(**dict(row))


@router.get("/{user_id}", response_model=UserOut, summary="Get a user", responses={404: {}})
async def get_user(user_id: int, res: Res, _: Admin) -> UserOut:
    row = await res.pool.fetchrow(f"SELECT {COLUMNS} FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    return UserOut(**dict(row))


@router.patch("/{user_id}", response_model=UserOut, summary="Change a user",
              description="A new password, role or disabled flag ends the user's sessions.",
              responses={404: {}, 409: {"description": "An admin may not disable or demote "
                                                       "themself"}})
async def update_user(user_id: int, body: UserPatch, res: Res, who: Admin) -> UserOut:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ValidationFailed("empty_patch", "nothing to change: give password, role or "
                               "disabled")
    if "password" in changes:
        changes["password_hash"] = await hash_password(changes.pop("password"))
    if who.kind == "user" and who.id == user_id and \
            (changes.get("disabled") or changes.get("role", "admin") != "admin"):
        raise Conflict("an admin may not disable or demote themself")
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=2))
    async with res.pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow("SELECT role, disabled FROM users WHERE id = $1 FOR UPDATE",
                                  user_id)
        if old is None:
            raise NotFound(f"user {user_id} does not exist")
        # updated_at is the account's version (security/tokens.py, `account_version`):
        # strictly past its previous value, even within one clock tick or after the
        # clock stepped back, so every change ends the tokens issued before it.
        row = await conn.fetchrow(
            f"UPDATE users SET {sets}, updated_at = greatest(now(), updated_at + "
            f"interval '1 microsecond') WHERE id = $1 RETURNING {COLUMNS}",
            user_id, *changes.values())
        await Tokens.revoke_user(conn, user_id)
        given = body.model_dump(exclude_none=True)
        # From what to what, for all but the password (only that it changed).
        values: dict[str, Any] = {k: {"from": old[k], "to": given[k]}
                                  for k in ("role", "disabled") if k in given}
        await audit.record(conn, who.actor, "user.update", row["username"],
                           changed=sorted(given), **values)
    return UserOut(**dict(row))


@router.delete("/{user_id}", status_code=204, summary="Delete a user",
               responses={404: {}, 409: {"description": "An admin may not delete themself"}})
async def delete_user(user_id: int, res: Res, who: Admin) -> None:
    if who.kind == "user" and who.id == user_id:
        raise Conflict("an admin may not delete themself")
    async with res.pool.acquire() as conn, conn.transaction():
        name = await conn.fetchval("DELETE FROM users WHERE id = $1 RETURNING username",
                                   user_id)
        if name is None:
            raise NotFound(f"user {user_id} does not exist")
        await audit.record(conn, who.actor, "user.delete", name)
