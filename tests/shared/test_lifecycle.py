"""A service's lifecycle: named tasks, readiness failing first on SIGTERM/SIGINT, draining
work given its deadline and then cancelled, auxiliaries kept until draining is over.

Real signals to this process: that is the path a service takes. The guard turns a signal
the lifecycle failed to catch into a test failure rather than the end of the test run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import structlog

from shared.health import Health
from shared.lifecycle import HARD_EXIT_GRACE_SECONDS, Lifecycle

Start = Callable[[Lifecycle], Awaitable[None]]


@pytest.fixture(autouse=True)
def uncaught_signals() -> Iterator[list[int]]:
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda n, _f: caught.append(n))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    yield caught
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    assert not caught, f"signals {caught} reached the process, not the lifecycle"


def request_stop(sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal this process once the tasks spawned so far have started."""
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), sig)


async def run(lifecycle: Lifecycle, start: Start) -> None:
    async with asyncio.timeout(10):
        await lifecycle.run(start)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_named_tasks_run_until_a_signal_and_the_handler_goes_with_run(
        sig: signal.Signals) -> None:
    lifecycle = Lifecycle(drain_seconds=5)
    names: list[str] = []

    async def work(lc: Lifecycle) -> None:
        task = asyncio.current_task()
        assert task is not None
        names.append(task.get_name())
        await lc.stopping.wait()

    async def start(lc: Lifecycle) -> None:
        lc.spawn("consumer", work(lc))
        lc.spawn("writer", work(lc))
        request_stop(sig)

    await run(lifecycle, start)
    assert sorted(names) == ["consumer", "writer"]
    assert lifecycle.stopping.is_set() and lifecycle.stopped.is_set()
    # The lifecycle's signal handler is gone with run(): nothing left to remove.
    assert not asyncio.get_running_loop().remove_signal_handler(sig)


async def test_readiness_fails_as_soon_as_a_stop_is_requested() -> None:
    """Before any work has drained, so the orchestrator moves traffic away first."""
    health = Health("postgres")
    health.ok("postgres")
    lifecycle = Lifecycle(drain_seconds=5, health=health)
    seen: dict[str, object] = {}

    async def work(lc: Lifecycle) -> None:
        assert health.ready
        await lc.stopping.wait()
        seen.update(ready=health.ready, failures=health.failures, stopped=lc.stopped.is_set())

    async def start(lc: Lifecycle) -> None:
        lc.spawn("consumer", work(lc))
        request_stop()

    await run(lifecycle, start)
    assert seen == {"ready": False, "failures": {"service": "shutting down"}, "stopped": False}


async def test_work_still_running_at_the_drain_deadline_is_cancelled() -> None:
    lifecycle = Lifecycle(drain_seconds=0.3)
    outcome: dict[str, str] = {}
    cancelled_after: list[float] = []

    async def prompt(lc: Lifecycle) -> None:
        await lc.stopping.wait()
        outcome["prompt"] = "drained"

    async def stuck(lc: Lifecycle) -> None:
        await lc.stopping.wait()
        stop_requested = time.monotonic()
        try:
            await asyncio.sleep(3600)  # ignores the stop request
        except asyncio.CancelledError:
            cancelled_after.append(time.monotonic() - stop_requested)
            outcome["stuck"] = "cancelled"
            raise

    async def start(lc: Lifecycle) -> None:
        lc.spawn("prompt", prompt(lc))
        lc.spawn("stuck", stuck(lc))
        request_stop()

    with structlog.testing.capture_logs() as logs:
        await run(lifecycle, start)
    assert outcome == {"prompt": "drained", "stuck": "cancelled"}
    assert 0.25 <= cancelled_after[0] < 5
    assert [e["task"] for e in logs if e["event"] == "drain deadline passed; cancelling"] \
        == ["stuck"]
    assert lifecycle.stopped.is_set()


async def test_auxiliary_tasks_are_not_drained_but_kept_until_draining_is_over() -> None:
    """E.g. the health server: it must answer (503) while the work drains."""
    lifecycle = Lifecycle(drain_seconds=0.2)
    order: list[str] = []

    async def work(lc: Lifecycle) -> None:
        await lc.stopping.wait()
        await asyncio.sleep(0.05)
        order.append("work drained")

    async def server(lc: Lifecycle) -> None:
        await lc.stopped.wait()
        order.append("server stopped")

    async def start(lc: Lifecycle) -> None:
        lc.spawn("consumer", work(lc))
        lc.spawn("health-http", server(lc), drains=False)
        request_stop()

    await run(lifecycle, start)
    assert order == ["work drained", "server stopped"]


async def test_a_second_signal_while_draining_changes_nothing() -> None:
    lifecycle = Lifecycle(drain_seconds=5)
    drained = asyncio.Event()

    async def work(lc: Lifecycle) -> None:
        await lc.stopping.wait()
        os.kill(os.getpid(), signal.SIGTERM)  # an impatient operator
        await asyncio.sleep(0.1)
        drained.set()

    async def start(lc: Lifecycle) -> None:
        lc.spawn("consumer", work(lc))
        request_stop()

    with structlog.testing.capture_logs() as logs:
        await run(lifecycle, start)
    assert drained.is_set()  # the drain was not cut short
    assert [e["event"] for e in logs].count("shutdown requested") == 1


STUBBORN_SERVICE = """
import asyncio
from shared.lifecycle import Lifecycle
from shared.service import run_service
from shared.settings import CommonSettings, ServiceSettings


async def stubborn() -> None:
    while True:  # a part that swallows cancellation
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


async def broken() -> None:
    await asyncio.sleep(0.2)
    raise RuntimeError("a part broke")


async def main(common: CommonSettings, settings: ServiceSettings) -> None:
    async def start(lc: Lifecycle) -> None:
        lc.spawn("stubborn", stubborn())
        lc.spawn("broken", broken())
    await Lifecycle(drain_seconds=settings.drain_seconds).run(start)


run_service("stubborn", ServiceSettings, main)
"""


def test_a_failed_part_ends_the_process_even_if_another_ignores_cancellation(
        tmp_path: Path) -> None:
    """Never alive but broken: past the drain deadline plus a grace the process exits 1."""
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN_SERVICE)
    env = {**os.environ, "INSA_ENV": "development", "INSA_DATABASE_URL": "postgresql://x/y",
           "INSA_REDIS_URL": "redis://x", "MQTT_USERNAME": "u", "MQTT_PASSWORD": "p",
           "HTTP_PORT": "0", "DRAIN_SECONDS": "0.5", "PYTHONPATH": str(Path.cwd())}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=30)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert 0.5 + HARD_EXIT_GRACE_SECONDS <= took < 0.5 + HARD_EXIT_GRACE_SECONDS + 10
    assert "service part failed; stopping" in done.stdout
    assert "RuntimeError: a part broke" in done.stdout
    assert "parts did not stop in time after a failure; exiting" in done.stdout
