"""API keys for machines and devices: `insa_<prefix>_<secret>`, shown once.

The prefix (public, 8 bytes) finds the row; the SHA-256 of the whole key is compared in
constant time. Keys are 256-bit random tokens, so a fast hash is enough: unlike a
password there is nothing to guess, and a slow hash would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

import asyncpg

from services.api.security.principal import Principal

PREFIX = "insa_"


def new_key() -> tuple[str, str, bytes]:
    """(key, prefix, hash): the key is given to the caller once, the rest is stored."""
    prefix = secrets.token_hex(8)
    key = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, digest(key)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def split(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    prefix, _, secret = key[len(PREFIX):].partition("_")
    return prefix if len(prefix) == 16 and secret else None


async def create(conn: asyncpg.Connection, name: str, role: str, device_id: str | None,
                 expires_at: datetime | None, created_by: str) -> tuple[str, dict[str, Any]]:
    key, prefix, key_hash = new_key()
    row = await conn.fetchrow(
        "INSERT INTO api_keys (prefix, key_hash, name, role, device_id, expires_at, created_by) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING " + COLUMNS,
        prefix, key_hash, name, role, device_id, expires_at, created_by)
    return key, dict(row)


COLUMNS = ("id, prefix, name, role, device_id, expires_at, revoked_at, created_by, "
           "created_at, last_used_at")


async def authenticate(conn: asyncpg.Connection, key: str) -> Principal | None:
    """The key's principal, or None for an unknown, wrong, revoked or expired key."""
    prefix = split(key)
    if prefix is None:
        return None
    row = await conn.fetchrow(
        "SELECT id, key_hash, name, role, device_id, last_used_at < now() - interval '1 minute' "
        "OR last_used_at IS NULL AS stale FROM api_keys WHERE prefix = $1 "
        "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())", prefix)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest(key)):
        return None
    if row["stale"]:  # a write a minute at most, not one per request of a busy machine
        await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", row["id"])
    return Principal("key", row["id"], row["name"], row["role"], row["device_id"])
