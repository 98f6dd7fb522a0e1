"""shared/db.create_pool: what a connection carries back to the pool, with and without
the reset query on release."""

from __future__ import annotations

from shared import db


async def session_after_release(dsn: str, session_state: bool) -> tuple[str, bool]:
    """(a session setting, whether an uncommitted transaction's table is still there) as
    the next user of the pool's one connection sees them."""
    pool = await db.create_pool(dsn, max_size=1, session_state=session_state)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'left-behind'")
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE uncommitted (x int)")
        async with pool.acquire() as conn:
            return (await conn.fetchval("SHOW application_name"),
                    await conn.fetchval("SELECT to_regclass('uncommitted') IS NOT NULL"))
    finally:
        await pool.close()


async def test_the_default_pool_resets_a_session_on_release(db_url: str) -> None:
    assert await session_after_release(db_url, session_state=True) == ("insa", False)


async def test_without_session_state_only_the_transaction_is_undone(db_url: str) -> None:
    # No reset query: a session setting stays (so the option is only for code that sets
    # none), while an open transaction is still rolled back.
    assert await session_after_release(db_url, session_state=False) == ("left-behind", False)


async def test_both_pools_decode_json_with_orjson(db_url: str) -> None:
    for session_state in (True, False):
        pool = await db.create_pool(db_url, max_size=1, session_state=session_state)
        try:
            assert await pool.fetchval("SELECT '{\"a\": [1, 2.5]}'::jsonb") == {"a": [1, 2.5]}
        finally:
            await pool.close()
