"""A password login, as the API's /auth/login and the console's login form both check it:
under the brute-force limits, audited either way."""

from __future__ import annotations

import asyncpg

from services.api import audit
from services.api.deps import Resources
from services.api.security.passwords import verify_password
from services.api.security.ratelimit import login_limits
from shared.errors import Unauthorized


async def check_password(res: Resources, username: str, password: str, client: str,
                         via: str | None) -> asyncpg.Record:
    """The account's row (id, role, updated_at) when the password is right and the account
    enabled; else Unauthorized, on the audit trail with `via` ("console"; None: the API)."""
    limits = login_limits(res.settings, username, client)
    _, account_here, _ = limits
    # A place in each limit is reserved before the (slow) password check, so guesses
    # sent in parallel cannot all pass one check, and a locked account refuses even the
    # right password (a guess is never confirmed). A success gives the places back and
    # clears the account's count from this client (not from elsewhere: an attacker's).
    held = await res.limiter.reserve(*limits)
    try:
        row = await res.pool.fetchrow("SELECT id, password_hash, role, disabled, updated_at "
                                      "FROM users WHERE username = $1", username)
        ok = await verify_password(row["password_hash"] if row else None, password)
    except Exception:
        await res.limiter.release(held)  # no verdict (the database failed)
        raise
    if not ok or row is None or row["disabled"]:
        reason = "disabled" if ok and row is not None else "bad credentials"
        await audit.record(res.pool, f"user:{username}", "auth.login", username,
                           "failure", client=client, reason=reason, via=via)
        raise Unauthorized("wrong username or password")
    await res.limiter.release(held)
    await res.limiter.clear(account_here)
    return row
