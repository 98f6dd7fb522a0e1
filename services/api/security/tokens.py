"""Access and refresh tokens: JWTs (PyJWT) signed with HS256, the algorithm pinned, so
`alg: none`, another algorithm, a tampered or expired token or another key is refused.

An access token carries its user's account version (`ver`, see `account_version`); a
request with one whose version is no longer the account's is refused (deps.py).

A refresh token is also recorded (`refresh_tokens`) by its `jti`: refreshing revokes it
and issues its successor in the same family; presenting a revoked one again revokes the
whole family (a replayed, stolen token), as the OAuth 2.0 security BCP advises.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt

from services.api import audit
from shared.errors import Conflict, Unauthorized

ALGORITHM = "HS256"
ISSUER = "insa"
AUDIENCE = "insa-api"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def account_version(updated_at: datetime) -> int:
    """A user's `updated_at` in whole microseconds (exact, unlike a float timestamp): every
    change of the account sets it past its previous value (routes/users.py), so it is a
    version that only moves forward, compared for equality only."""
    return (updated_at - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class Tokens:
    def __init__(self, secret: str, access_seconds: int, refresh_seconds: int,
                 reuse_grace_seconds: float = 10.0) -> None:
        self._secret = secret
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds
        # A rotated refresh token presented again this soon is a race (two tabs, a retry
        # after a lost answer), answered 409; later, a replay that revokes the family.
        self.reuse_grace_seconds = reuse_grace_seconds

    def _encode(self, claims: dict[str, Any], seconds: int) -> str:
        now = int(time.time())
        return jwt.encode({**claims, "iss": ISSUER, "aud": AUDIENCE, "iat": now,
                           "exp": now + seconds}, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str, kind: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "typ", "jti"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if claims["typ"] != kind:
            raise Unauthorized(f"not an {kind} token")
        return claims

    def access(self, user_id: int, username: str, role: str, version: int) -> str:
        return self._encode({"sub": str(user_id), "name": username, "role": role,
                             "ver": version, "typ": "access", "jti": uuid.uuid4().hex},
                            self.access_seconds)

    async def issue(self, conn: asyncpg.Connection, user_id: int, username: str, role: str,
                    version: int, family: uuid.UUID | None = None
                    ) -> tuple[TokenPair, uuid.UUID]:
        """A new pair; the refresh token is recorded (a new family at login). `version`:
        the account's, read with the credentials that were checked (a change in between
        makes the token void at once, never valid after the change)."""
        jti = uuid.uuid4()
        family = family or jti
        await conn.execute(
            "INSERT INTO refresh_tokens (id, family, user_id, expires_at) "
            "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            jti, family, user_id, float(self.refresh_seconds))
        refresh = self._encode({"sub": str(user_id), "typ": "refresh", "jti": str(jti),
                                "fam": str(family)}, self.refresh_seconds)
        return TokenPair(self.access(user_id, username, role, version), refresh,
                         self.access_seconds), jti

    async def rotate(self, conn: asyncpg.Connection, refresh_token: str, client: str
                     ) -> tuple[TokenPair, int]:
        """Revoke this refresh token and issue its successor, audited in the same
        transaction; returns (pair, user id). Reuse of a revoked token revokes its family
        and is refused."""
        claims = self.decode(refresh_token, "refresh")
        jti = uuid.UUID(claims["jti"])
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT r.family, r.revoked_at, r.replaced_by, r.expires_at < now() AS expired, "
                "now() - r.revoked_at < make_interval(secs => $2) AS just_used, u.id, "
                "u.username, u.role, u.disabled, u.updated_at FROM refresh_tokens r JOIN users u "
                "ON u.id = r.user_id WHERE r.id = $1 FOR UPDATE OF r", jti,
                self.reuse_grace_seconds)
            if row is None or row["expired"]:
                raise Unauthorized("refresh token unknown or expired")
            if row["disabled"]:
                raise Unauthorized("account disabled")
            if row["revoked_at"] is not None and row["replaced_by"] is None:
                raise Unauthorized("refresh token revoked (logout, or a change to the account)")
            if row["revoked_at"] is not None and row["just_used"]:
                # Two tabs or a retry racing the rotation, not a replay of a stolen token.
                raise Conflict("refresh token used a moment ago; use the pair it returned",
                               user_id=row["id"])
            if row["revoked_at"] is None:
                pair, successor = await self.issue(conn, row["id"], row["username"],
                                                   row["role"],
                                                   account_version(row["updated_at"]),
                                                   row["family"])
                await conn.execute("UPDATE refresh_tokens SET revoked_at = now(), "
                                   "replaced_by = $2 WHERE id = $1", jti, successor)
                await audit.record(conn, f"user:{row['username']}", "auth.refresh",
                                   row["username"], client=client)
                return pair, int(row["id"])
        # Outside the transaction, so the revocation stays when the refusal is raised.
        await self.revoke_family(conn, row["family"])
        raise Unauthorized("refresh token reused: every token of this login revoked",
                           reused=True, user_id=row["id"])

    async def revoke(self, conn: asyncpg.Connection, claims: dict[str, Any]) -> None:
        """Logout: revoke the family of this (decoded) refresh token."""
        family = await conn.fetchval("SELECT family FROM refresh_tokens WHERE id = $1",
                                     uuid.UUID(claims["jti"]))
        if family is not None:
            await self.revoke_family(conn, family)

    @staticmethod
    async def revoke_family(conn: asyncpg.Connection, family: uuid.UUID) -> None:
        await conn.execute("UPDATE refresh_tokens SET revoked_at = now() "
                           "WHERE family = $1 AND revoked_at IS NULL", family)

    @staticmethod
    async def revoke_user(conn: asyncpg.Connection, user_id: int) -> None:
        """Every session of a user (disabled, deleted, password reset)."""
        await conn.execute("UPDATE refresh_tokens SET revoked_at = now() "
                           "WHERE user_id = $1 AND revoked_at IS NULL", user_id)
