"""asyncpg pool factory with orjson codecs for json/jsonb."""

from __future__ import annotations

import asyncpg
import orjson


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, schema="pg_catalog", encoder=_dumps,
                                  decoder=orjson.loads)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      application_name: str = "insa") -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        server_settings={"application_name": application_name}, command_timeout=60)
    assert pool is not None
    return pool
