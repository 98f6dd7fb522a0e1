"""A part that runs until told to stop (`run(stop)`), for the length of a `with` block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


@contextlib.asynccontextmanager
async def until_stopped(run: Callable[[asyncio.Event], Awaitable[Any]],
                  timeout: float = 10) -> AsyncIterator[asyncio.Task[Any]]:
    """Start `run(stop)`; on leaving, set `stop` and wait for it to end."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout)
