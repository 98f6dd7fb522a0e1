"""Run a service: named long-lived tasks in a TaskGroup, SIGTERM drain with a deadline,
and an exit status a supervisor can act on when a part fails."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # health.py waits with the helpers below
    from shared.health import Health

log = structlog.get_logger(__name__)

EXIT_FAILED = 1
# After a part failed, how long the others get to stop before the process is ended anyway:
# a task that ignores cancellation must not leave a half-stopped process looking alive.
HARD_EXIT_GRACE_SECONDS = 5.0


class StartupError(RuntimeError):
    """A part of the service could not start (a port in use, bad settings): the process
    exits with a non-zero status so its supervisor restarts it."""


class PartFailed(RuntimeError):
    """A long-lived part of the service failed: the process exits with a non-zero status
    so its supervisor restarts it, the part with it."""


class Lifecycle:
    """What a service's tasks share: the stop signal and the task group to spawn into."""

    def __init__(self, drain_seconds: float, health: Health | None = None) -> None:
        self.drain_seconds = drain_seconds
        self.health = health
        self.stopping = asyncio.Event()  # set on SIGTERM/SIGINT: stop taking work, drain
        self.stopped = asyncio.Event()   # set once draining is over: auxiliaries may exit
        self._work: list[asyncio.Task[Any]] = []
        self._group: asyncio.TaskGroup | None = None
        self._hard_exit: threading.Timer | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], *, drains: bool = True) -> None:
        """Start a named task. Draining tasks must return on their own once `stopping` is set."""
        assert self._group is not None, "spawn() only inside run()"
        task = self._group.create_task(coro, name=name)
        task.add_done_callback(self._on_task_done)
        if drains:
            self._work.append(task)

    async def run(self, start: Callable[[Lifecycle], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                try:
                    await start(self)
                except BaseException as exc:
                    self._failed("start", exc)
                    raise
                group.create_task(self._enforce_deadline(), name="shutdown")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        exc = failure(task)
        if exc is not None:
            self._failed(task.get_name(), exc)

    def _failed(self, part: str, exc: BaseException | None) -> None:
        """A part failed: the TaskGroup now cancels the others; past a grace period the
        process ends anyway, so it never lingers without its parts."""
        if self._hard_exit is not None or isinstance(exc, asyncio.CancelledError):
            return
        log_part_failed(part, exc)
        self._hard_exit = exit_unless_stopped(self.drain_seconds + HARD_EXIT_GRACE_SECONDS,
                                              part)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping.is_set():
            return
        log.info("shutdown requested", signal=sig.name, drain_seconds=self.drain_seconds)
        if self.health is not None:
            self.health.stopping = True  # readiness fails first, so traffic moves elsewhere
        self.stopping.set()

    async def _enforce_deadline(self) -> None:
        """Let the work drain after a stop request, then cancel what is left."""
        await self.stopping.wait()
        if self._work:
            _, late = await asyncio.wait(self._work, timeout=self.drain_seconds)
            for task in late:
                log.warning("drain deadline passed; cancelling", task=task.get_name())
                task.cancel()
        self.stopped.set()


def failure(task: asyncio.Task[Any]) -> BaseException | None:
    """What a finished task failed with; None when it returned or was cancelled."""
    return None if task.cancelled() else task.exception()


def log_part_failed(part: str, exc: BaseException | None) -> None:
    log.error("service part failed; stopping", part=part, error=describe(exc))


def exit_unless_stopped(seconds: float, part: str) -> threading.Timer:
    """After a part failed: end the process in `seconds` should the others not have
    stopped by then (a daemon timer, so a process that did stop is not held up)."""
    timer = threading.Timer(seconds, _exit_now, args=(part,))
    timer.daemon = True
    timer.start()
    return timer


def spawn_part(name: str, coro: Coroutine[Any, Any, Any],
               on_failure: Callable[[str, BaseException], None]) -> asyncio.Task[Any]:
    """A named long-lived task outside a Lifecycle (the API's, whose signals and shutdown
    uvicorn owns): should it fail, it is logged as a Lifecycle logs its parts, at once,
    and `on_failure(name, error)` decides what follows."""
    def done(task: asyncio.Task[Any]) -> None:
        exc = failure(task)
        if exc is not None:
            log_part_failed(name, exc)
            on_failure(name, exc)

    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(done)
    return task


def _exit_now(part: str) -> None:
    log.error("parts did not stop in time after a failure; exiting", part=part)
    os._exit(EXIT_FAILED)


def leaf(exc: BaseException | None) -> BaseException | None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException | None) -> str:
    """One line for a failure (the first leaf of an exception group)."""
    found = leaf(exc)
    return f"{type(found).__name__}: {found}"


async def wait_any(*events: asyncio.Event | None, timeout: float | None = None) -> bool:
    """Wait until one of `events` is set or `timeout` passes; True when one is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events if e is not None]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, cut short by `stop`; True when stopped."""
    return await wait_any(stop, timeout=seconds)


async def run_periodically(job: Callable[[], Awaitable[None]], *, every: float,
                           stop: asyncio.Event, what: str,
                           transient: Callable[[BaseException], bool]) -> None:
    """Run `job` every `every` seconds until `stop`. A transient failure skips one round
    (the next one catches up); anything else is a bug and propagates."""
    while not await sleep_or_stop(stop, every):
        try:
            await job()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("periodic task skipped a round", task=what,
                        error=f"{type(exc).__name__}: {exc}")
