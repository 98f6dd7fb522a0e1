"""PostgreSQL LISTEN on a dedicated connection: rule changes and manual alert changes
reach the engine without a restart or a poll.

Notifications sent while the connection was down are lost, so after every reconnect
`on_reconnect` re-reads everything (the rules) before listening on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from shared import db
from shared.lifecycle import wait_any
from shared.retry import Stopped, retry_until_available

log = structlog.get_logger(__name__)
Handler = Callable[[list[int]], Awaitable[None]]
DEBOUNCE_SECONDS = 0.2  # a bulk change (load-defaults) becomes one reload


@dataclass
class _Session:
    conn: asyncpg.Connection
    pending: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)


async def listen(dsn: str, handlers: dict[str, Handler], *,
                 on_reconnect: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    first = True
    try:
        while not stop.is_set():
            session = await retry_until_available(
                lambda: _connect(dsn, handlers), transient=db.is_transient,
                what="postgres listen", stop=stop)
            try:
                if not first:
                    await on_reconnect()
                first = False
                await _dispatch(session, handlers, stop)
            except Exception as exc:
                if not db.is_transient(exc):
                    raise
                log.warning("listen connection failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                await session.conn.close(timeout=5)
    except Stopped:
        pass


async def _connect(dsn: str, handlers: dict[str, Handler]) -> _Session:
    session = _Session(await asyncpg.connect(dsn))

    def received(_: Any, __: int, channel: str, payload: str) -> None:
        if payload.isdigit():
            session.pending[channel].append(int(payload))
        session.woken.set()

    for channel in handlers:
        await session.conn.add_listener(channel, received)
    session.conn.add_termination_listener(lambda _: session.lost.set())
    return session


async def _dispatch(session: _Session, handlers: dict[str, Handler], stop: asyncio.Event
                    ) -> None:
    while not stop.is_set() and not session.lost.is_set():
        await wait_any(session.woken, session.lost, stop, timeout=30)
        if not session.woken.is_set():
            await session.conn.execute("SELECT 1")  # notices a silently dead connection
            continue
        await asyncio.sleep(DEBOUNCE_SECONDS)
        session.woken.clear()
        batch = {channel: ids[:] for channel, ids in session.pending.items() if ids}
        session.pending.clear()
        for channel, ids in batch.items():
            await handlers[channel](sorted(set(ids)))
