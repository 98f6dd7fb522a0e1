"""`insa bench broker-kill`: what a broker kill -9 loses of what it had acknowledged.

Mosquitto acknowledges a QoS 1 publish before its state is on disk and saves its
in-memory database every `autosave_interval` and on a graceful stop. This
measures, on private servers, the readings the broker acknowledged (PUBACK) to
devices but that never reached the stream (which follows the database commit),
when the broker is killed with SIGKILL: once while the ingestor keeps up, once
while the ingestor is stopped and the broker is queueing for it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from devtools.bench.publishers import TrackedDevice
from devtools.registry import INGESTOR
from devtools.stack.servers import (
    RunningBroker,
    start_broker,
    start_postgres,
    start_redis,
    stop_and_remove,
)
from devtools.stack.service_process import ServiceProcess, ingestor_environment
from shared.migrate import migrate

AUTOSAVE_SECONDS = 30  # mosquitto/mosquitto.conf autosave_interval


def streamed(redis_url: str) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}
    entries: list[Any] = redis.Redis.from_url(redis_url).xrange("insa:telemetry")  # type: ignore[assignment]
    for _, fields in entries:
        seen.setdefault(fields[b"device_id"].decode(), set()).add(int(fields[b"seq"]))
    return seen


def publish_for(devices: list[TrackedDevice], seconds: float, rate: float,
                start_seq: int) -> int:
    """Publish `rate` readings/s in all for `seconds`; returns the next seq."""
    started, seq = time.monotonic(), start_seq
    while time.monotonic() - started < seconds:
        for device in devices:
            device.publish(seq)
        seq += 1
        time.sleep(max(0.0, started + (seq - start_seq) * len(devices) / rate
                       - time.monotonic()))
    return seq


def wait_acked(devices: list[TrackedDevice], seqs: range, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(not d.acked.issuperset(seqs) for d in devices):
        time.sleep(0.1)


def scenario(broker: RunningBroker, ingestor: ServiceProcess, redis_url: str,
             devices: list[TrackedDevice], ingestor_running: bool, rate: float,
             seconds: float, first_seq: int) -> dict[str, Any]:
    """Publish for `seconds`; kill -9 the broker half-way and start it a second later."""
    if not ingestor_running:
        ingestor.stop(signal.SIGTERM)
    # Steady state: one autosave (every 30 s) since the sessions were made or restored.
    time.sleep(AUTOSAVE_SECONDS + 1)
    result: list[int] = []
    publisher = threading.Thread(
        target=lambda: result.append(publish_for(devices, seconds, rate, first_seq)))
    publisher.start()
    time.sleep(seconds / 2)
    killed_seq = max(max(d.acked, default=first_seq) for d in devices)
    broker.stop(signal.SIGKILL)
    time.sleep(1.0)
    broker.start()
    publisher.join()
    next_seq = result[0]
    wait_acked(devices, range(first_seq, next_seq))  # paho resends what was unacked
    if not ingestor_running:
        ingestor.start()
    time.sleep(10)  # redeliveries and the ingestor's catch-up
    seen = streamed(redis_url)
    acked = {d.device_id: {s for s in d.acked if first_seq <= s < next_seq} for d in devices}
    lost = {d: sorted(acked[d] - seen.get(d, set())) for d in acked}
    per_device = rate / len(devices)  # seq advances this many per second
    before = [s for v in lost.values() for s in v if s <= killed_seq]
    return {"ingestor": "running" if ingestor_running else "stopped",
            "published_seconds": seconds, "rate": rate,
            "acked": sum(len(a) for a in acked.values()),
            "lost": sum(len(v) for v in lost.values()),
            "lost_after_restart": sum(len(v) for v in lost.values()) - len(before),
            # How far back before the kill the losses reach, in seconds of publishing.
            "lost_span_seconds": round((killed_seq - min(before)) / per_device, 1)
            if before else 0.0}


def run(rate: float = 500, seconds: float = 20, devices: int = 5,
        progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    ids = [f"kill-{n:02d}" for n in range(devices)]
    pg, rd = start_postgres(durable=True), start_redis()
    broker = start_broker(devices=ids)
    ingestor: ServiceProcess | None = None
    fleet: list[TrackedDevice] = []
    try:
        asyncio.run(migrate(pg.spec.dsn()))
        # Load-generating devices (100/s each, in bursts after the restart): over the
        # flood guard's default limit.
        env = ingestor_environment(pg.spec.dsn(), rd.url, broker, INSA_LOG_LEVEL="WARNING",
                                   INSA_INGESTOR_DEVICE_RATE_LIMIT="1000000")
        ingestor = ServiceProcess(INGESTOR, env, pg.spec.datadir.parent / "ingestor.log")
        ingestor.start()
        fleet = [TrackedDevice(broker.port, d, broker.credentials[d]) for d in ids]
        results = []
        for n, running in enumerate((True, False)):
            progress(f"broker kill -9 after {seconds:.0f} s at {rate:.0f} readings/s, "
                     f"ingestor {'running' if running else 'stopped'}")
            results.append(scenario(broker, ingestor, rd.url, fleet, running, rate, seconds,
                                    first_seq=n * 1_000_000))
        return results
    finally:
        for device in fleet:
            device.close()
        if ingestor is not None:
            ingestor.stop()
        stop_and_remove(broker, rd, pg)


def report(results: list[dict[str, Any]]) -> str:
    lines = ["broker kill -9: readings acknowledged to devices but never stored"]
    for r in results:
        lines.append(f"  ingestor {r['ingestor']:<8} {r['acked']:>7,} acked in "
                     f"{r['published_seconds']:.0f} s, lost {r['lost']:,}: "
                     f"{r['lost'] - r['lost_after_restart']:,} from the last "
                     f"{r['lost_span_seconds']} s before the kill, "
                     f"{r['lost_after_restart']:,} after the restart")
    return "\n".join(lines)
