"""Passwords hashed with Argon2id (argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # Argon2id, 64 MiB, 3 passes: tens of ms per hash
# Verified when the user does not exist, so a wrong username costs as long as a wrong
# password and timing does not tell which names exist.
_DUMMY = _hasher.hash("not a password of anyone")

MIN_LENGTH = 12


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored: str | None, password: str) -> bool:
    """True if `password` matches; runs off the event loop (Argon2 is slow on purpose)."""
    def check() -> bool:
        try:
            return _hasher.verify(stored or _DUMMY, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
