"""Retry while a dependency is unavailable: one policy for every service.

Jittered exponential backoff (tenacity's "full jitter": a random delay up to
`initial`·2ⁿ, capped at `max_delay`) that never gives up on a transient error
and re-raises anything else at once. What is transient is the caller's call,
made with the classifiers beside each client (`shared.db.is_transient`,
`shared.redis_client.is_transient`). A stop event ends the waiting early, so a
service draining on SIGTERM is not held by a backoff sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from shared.lifecycle import sleep_or_stop

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


async def retry_until_available(
        attempt: Callable[[], Awaitable[T]], *, transient: Callable[[BaseException], bool],
        what: str, initial: float = 0.1, max_delay: float = 5.0,
        stop: asyncio.Event | None = None,
        on_failure: Callable[[BaseException], None] = lambda _exc: None,
        on_recovery: Callable[[float], None] = lambda _seconds: None) -> T:
    """Await `attempt()` until it succeeds; a transient error is logged once per outage
    and reported to `on_failure` each time, and `on_recovery(outage seconds)` follows the
    first success after one. Raises `Stopped` if `stop` is set while waiting."""
    failing_since: float | None = None

    def before_sleep(state: RetryCallState) -> None:
        nonlocal failing_since
        assert state.outcome is not None
        exc = state.outcome.exception()
        assert exc is not None
        if failing_since is None:
            failing_since = time.monotonic()
            log.error("dependency unavailable; retrying", dependency=what,
                      error=f"{type(exc).__name__}: {exc}")
        on_failure(exc)

    async def sleep(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
        elif await sleep_or_stop(stop, seconds):
            raise Stopped(what)

    retrying = AsyncRetrying(retry=retry_if_exception(transient), sleep=sleep,
                             wait=wait_random_exponential(multiplier=initial, max=max_delay),
                             before_sleep=before_sleep, reraise=True)
    async def call() -> T:  # tenacity awaits only what it sees is a coroutine function
        return await attempt()

    result: T = await retrying(call)
    if failing_since is not None:
        outage = time.monotonic() - failing_since
        log.info("dependency back", dependency=what, outage_seconds=round(outage, 2))
        on_recovery(outage)
    return result
