"""The first admin: created when no user exists, from INSA_API_ADMIN_PASSWORD or with a
one-time password printed once to the log. Never a fixed default."""

from __future__ import annotations

import secrets
import sys

import asyncpg
import structlog

from services.api import audit
from services.api.security.passwords import hash_password
from services.api.settings import ApiSettings

log = structlog.get_logger(__name__)
LOCK_KEY = 0x494E5341_41444D4E  # "INSAADMN": replicas starting together create one admin


async def ensure_first_admin(conn: asyncpg.Connection, settings: ApiSettings) -> str | None:
    """Create the first admin if the users table is empty; returns a generated password
    (to show once), or None."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        if await conn.fetchval("SELECT EXISTS (SELECT FROM users)"):
            return None
        given = settings.admin_password.get_secret_value() if settings.admin_password else None
        password = given or secrets.token_urlsafe(18)
        await conn.execute("INSERT INTO users (username, password_hash, role) "
                           "VALUES ($1, $2, 'admin')", settings.admin_username,
                           await hash_password(password))
        await audit.record(conn, "insa-api", "user.create", settings.admin_username,
                           role="admin", first_admin=True, generated=given is None)
    if given is not None:
        log.info("first admin created from INSA_API_ADMIN_PASSWORD",
                 username=settings.admin_username)
        return None
    # Printed, not logged as a field, so it lands on the console once and nowhere else
    # structured (log shippers); the operator changes it after the first login.
    print(f"\nINSA API: first admin '{settings.admin_username}' created with one-time "
          f"password: {password}\nChange it after logging in (PATCH /api/v1/users/<id>).\n",
          file=sys.stderr, flush=True)
    return password
