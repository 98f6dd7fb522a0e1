"""Live clients for `insa bench api`: K server-sent-event clients on the alerts feed held
at once by the API; alerts added to `insa:alerts` one at a time, and the time until each
client has each. Also the API process's RSS and CPU while they are held.

The clients are plain asyncio sockets that look for `event: ready` and `event: alert` in
what arrives (a few µs per event each), so with 1,000 of them in this process the delivery
time is mostly the server's.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from devtools.bench.measure import CpuSampler, latency_summary
from shared.streams import ALERTS

PREFIX = "/api/v1"


def summary(latencies: list[float]) -> dict[str, float]:
    found = latency_summary(latencies)
    return {**{k: round(v, 1) for k, v in found.items()}, "n": len(latencies)}


def raise_fd_limit(clients: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients * 2 + 1024  # both ends when the API is a child with this limit
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


class LiveClients:
    """Server-sent-event clients counting the `ready` and `alert` events they receive."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.request = (f"GET {PREFIX}/live/events?streams=alerts HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                        "Accept: text/event-stream\r\n\r\n").encode()
        self.opened: list[float] = []
        self.ready: list[float | None] = []
        self.alerts: list[list[float]] = []
        self.refused = 0
        self.tasks: list[asyncio.Task[None]] = []

    def open(self) -> None:
        index = len(self.opened)
        self.opened.append(time.perf_counter())
        self.ready.append(None)
        self.alerts.append([])
        self.tasks.append(asyncio.create_task(self._run(index)))

    async def _run(self, index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                self.refused += 1
                return
            tail = b""
            while chunk := await reader.read(65536):
                now = time.perf_counter()
                data = tail + chunk  # a marker split across reads is found whole
                if self.ready[index] is None and b"event: ready" in data:
                    self.ready[index] = now
                self.alerts[index] += [now] * data.count(b"event: alert")
                tail = data[-15:]
        finally:
            writer.close()

    def count_ready(self) -> int:
        return sum(r is not None for r in self.ready)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def measure_live(port: int, token: str, redis_url: str, pid: int, wanted: int,
                       alerts: int, hold_seconds: float, progress: Callable[[str], None]
                       ) -> dict[str, Any]:
    """`wanted` clients opened 100 at a time, held idle `hold_seconds`, then `alerts`
    alerts added one at a time (each waits until every held client has it)."""
    cpu, clients = CpuSampler(pid), LiveClients(port, token)
    rss_before, cpu_before = rss_mb(pid), cpu.seconds()
    started = time.perf_counter()
    for batch in range(0, wanted, 100):  # as a burst of reconnecting browsers
        for _ in range(min(100, wanted - batch)):
            clients.open()
        await wait_for(lambda: clients.count_ready() + clients.refused >= len(clients.opened)
                       or any(t.done() and t.exception() for t in clients.tasks), 60)
    opening = time.perf_counter() - started
    open_cpu = cpu.seconds() - cpu_before
    held = clients.count_ready()
    to_ready = [(r - o) * 1000 for r, o in zip(clients.ready, clients.opened, strict=True)
                if r is not None]
    failed = [t.exception() for t in clients.tasks if t.done() and t.exception()]
    progress(f"  {held} clients held ({clients.refused} refused, {len(failed)} failed) "
             f"in {opening:.1f} s")
    before = cpu.seconds()
    await asyncio.sleep(hold_seconds)
    idle_cpu, rss_held = cpu.seconds() - before, rss_mb(pid)
    streams = aioredis.Redis.from_url(redis_url)
    delivery: list[float] = []
    last_client: list[float] = []
    before = cpu.seconds()
    try:
        for n in range(alerts):
            alert = {"id": n + 1, "alert_id": n + 1, "rule_id": 1, "rule": "bench motor hot",
                     "device_id": "W-1", "event": "firing", "state": "firing",
                     "severity": "critical", "value": 151.0, "threshold": 150.0,
                     "message": "motor_temp > 150", "labels": {}}
            sent = time.perf_counter()
            await streams.xadd(ALERTS, {"alert": orjson.dumps(alert)})
            await wait_for(lambda n=n: all(len(a) > n for a, r in
                                           zip(clients.alerts, clients.ready, strict=True)
                                           if r is not None), 30)
            got = [(a[n] - sent) * 1000 for a, r in zip(clients.alerts, clients.ready,
                                                        strict=True)
                   if r is not None and len(a) > n]
            delivery += got
            last_client.append(max(got, default=0.0))
            await asyncio.sleep(0.5)
    finally:
        await streams.aclose()
        await clients.close()
    received = sum(len(a) for a in clients.alerts)
    return {"clients": wanted, "held": held, "refused": clients.refused,
            "failed": [repr(e) for e in failed[:3]], "open_seconds": round(opening, 2),
            "open_cpu_seconds": round(open_cpu, 2), "to_ready_ms": summary(to_ready),
            "rss_mb_before": rss_before, "rss_mb_held": rss_held,
            "idle_cpu_seconds_per_second": round(idle_cpu / hold_seconds, 3),
            "alerts_sent": alerts, "alerts_received": received,
            "alerts_expected": held * alerts, "delivery_ms": summary(delivery),
            "all_clients_ms": [round(v, 1) for v in last_client],
            "delivery_cpu_seconds": round(cpu.seconds() - before, 2)}


