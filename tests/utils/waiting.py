"""Polling with a deadline, for effects that happen in another process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                     timeout: float = 20, what: str = "condition") -> T:
    """Call `probe` until `done(result)`; fail with the last result after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {result!r}")
        await asyncio.sleep(0.1)
