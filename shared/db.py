"""asyncpg pool factory with orjson codecs for json/jsonb, and how to read its errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import orjson

from shared.retry import retry_until_available

if TYPE_CHECKING:
    from shared.health import Health

T = TypeVar("T")

# Raised when PostgreSQL is down, restarting, overloaded or cut a session mid-query
# (asyncpg reports a COPY cut short as InternalClientError "cannot switch to state"):
# wait and retry. Only a data error (see is_data_error) is the data's fault.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
               asyncpg.InternalClientError)


def is_data_error(exc: BaseException) -> bool:
    """A data exception or integrity violation (SQLSTATE classes 22, 23): this data, not
    the database, is the problem, so retrying cannot help."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("22", "23")


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the database is unavailable, not refusing this data."""
    return isinstance(exc, UNAVAILABLE) and not is_data_error(exc)


def is_database_error(exc: BaseException) -> bool:
    """Any failure of the database or of talking to it, data errors included: for loops
    that must outlive everything (a data error there is waited out or skipped, not fatal)."""
    return isinstance(exc, UNAVAILABLE)


def is_broken_connection(exc: BaseException) -> bool:
    """The session cannot be trusted any more: drop it instead of returning it to the pool."""
    return isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, schema="pg_catalog", encoder=_dumps,
                                  decoder=orjson.loads)


async def connect(dsn: str, application_name: str = "insa") -> asyncpg.Connection:
    """One connection with the pools' JSON codecs (for tools and tests)."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": application_name})
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A release without asyncpg's reset query (RESET ALL, UNLISTEN *, CLOSE ALL, advisory
    unlocks): one round trip less per query. asyncpg still rolls back an open transaction."""


async def create_pool(dsn: str, *, max_size: int = 10, application_name: str = "insa",
                      session_state: bool = True) -> asyncpg.Pool:
    """A pool that connects on first use, so a service starts (and waits, not ready) while
    PostgreSQL is still down. `session_state=False`: for a user that leaves nothing in a
    session past its transaction (no SET, LISTEN, session advisory lock, cursor held open
    outside a transaction), connections go back to the pool without a reset query."""
    pool = await asyncpg.create_pool(
        dsn, min_size=0, max_size=max_size, init=_init_connection,
        server_settings={"application_name": application_name}, command_timeout=60,
        reset=None if session_state else _keep_session)
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=10) as conn:
        await conn.fetchval("SELECT 1")


async def until_available(attempt: Callable[[], Awaitable[T]], health: Health, *,
                          max_delay: float) -> T:
    """`attempt()` retried while PostgreSQL is unavailable, readiness failing meanwhile:
    for work that must not be given up (what it would write lives only in memory)."""
    result = await retry_until_available(
        attempt, transient=is_transient, what="postgres", max_delay=max_delay,
        on_failure=lambda exc: health.failing("postgres", f"{type(exc).__name__}: {exc}"))
    health.ok("postgres")
    return result
