"""`insa bench ingest`: sustained ingest rate, publish→committed latency, lost and duplicated
readings, against the broker's raw QoS 1 pass-through measured in the same run.

It brings up private PostgreSQL (durable: fsync and synchronous commit on),
Redis (AOF) and Mosquitto (the project's config) on free ports, so it neither
disturbs nor is disturbed by a running `make run` stack.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import redis

from devtools.bench.publishers import METRICS, publish_all
from devtools.registry import INGESTOR
from devtools.stack.servers import (
    RunningBroker,
    start_broker,
    start_postgres,
    start_redis,
    stop_and_remove,
)
from devtools.stack.service_process import (
    ServiceProcess,
    ingestor_environment,
    replica_overrides,
)
from shared.migrate import migrate
from shared.mqtt import TELEMETRY_FILTER


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 100_000
    devices: int = 20
    batch_max_messages: int = 1000
    batch_max_age_ms: float = 25.0
    receive_maximum: int = 4000
    replicas: int = 1  # ingestor processes, each taking its partition of the devices
    # Latency under a steady load below saturation (at saturation it is queueing time):
    # this fraction of the sustained rate, for this many seconds.
    paced_fraction: float = 0.5
    paced_seconds: float = 10.0
    units: bool = False  # every value a {value, unit} object (publishers.UNITS)


@dataclass
class Phase:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def measure_raw_passthrough(broker: RunningBroker, credentials: dict[str, str],
                            per_device: int, units: bool = False) -> Phase:
    """The ceiling: the same publishers into a C QoS 1 subscriber that stores nothing."""
    total = per_device * len(credentials)
    binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
    sub = subprocess.Popen(
        [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-u", "insa-ingestor",
         "-P", broker.credentials["insa-ingestor"], "-i", "insa-ingestor", "-q", "1",
         "-t", TELEMETRY_FILTER, "-C", str(total)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)  # subscribed before the first publish
    started = time.monotonic()
    publish_all(broker.port, credentials, per_device, units=units)
    sub.wait(600)
    return Phase(total, time.monotonic() - started)


class CpuSampler:
    """CPU seconds (user + system) a process used, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_ingest(ingestors: list[ServiceProcess], broker: RunningBroker,
                   credentials: dict[str, str], per_device: int,
                   rate_per_device: float | None = None,
                   units: bool = False) -> tuple[Phase, float]:
    """Publish and wait until every value is committed; returns the phase and CPU seconds."""
    total = per_device * len(credentials)
    rows_before = sum(i.metric("insa_ingestor_rows_written_total") for i in ingestors)
    cpus = [CpuSampler(i.proc.pid) for i in ingestors if i.proc is not None]
    cpu_before = sum(c.seconds() for c in cpus)
    started = time.monotonic()
    publisher = threading.Thread(target=publish_all,
                                 args=(broker.port, credentials, per_device, rate_per_device),
                                 kwargs={"units": units})
    publisher.start()
    deadline = started + 900
    while sum(i.metric("insa_ingestor_rows_written_total") for i in ingestors) - rows_before \
            < total * len(METRICS):
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest did not finish in 900 s:\n{ingestors[0].log()}")
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    cpu_used = sum(c.seconds() for c in cpus) - cpu_before
    publisher.join()
    return Phase(total, elapsed), cpu_used


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] \
        if len(values) > 1 else (values[0] if values else 0.0)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": max(latencies, default=0)}


def check_stream(redis_url: str, credentials: dict[str, str], per_device: int
                 ) -> tuple[list[float], int, int]:
    """For these devices: latencies (ms, stream entry time minus reading ts), lost and
    duplicated (device, seq)."""
    wanted = {d.encode() for d in credentials}
    client = redis.Redis.from_url(redis_url)
    seen: dict[tuple[bytes, int], int] = {}
    latencies: list[float] = []
    last = "-"
    while True:
        chunk: list[Any] = client.xrange("insa:telemetry", min=last, count=10_000)  # type: ignore[assignment]
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            break
        for entry_id, fields in chunk:
            if fields[b"device_id"] not in wanted:
                continue
            key = (fields[b"device_id"], int(fields[b"seq"]))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                latencies.append(int(entry_id.split(b"-")[0]) - int(fields[b"ts"]))
        last = chunk[-1][0].decode()
    expected = {(d.encode(), s) for d in credentials for s in range(per_device)}
    lost = len(expected - set(seen))
    duplicated = sum(n - 1 for n in seen.values())
    return latencies, lost, duplicated


async def check_storage(dsn: str, total: int) -> tuple[int, int]:
    """Lost messages and duplicate rows in the database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (device, time)) FROM telemetry t "
            "JOIN metrics m ON m.id = t.metric WHERE m.name = 'flow_rate'")
    finally:
        await conn.close()
    return total - distinct, rows - distinct


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    per_device = cfg.messages // cfg.devices
    total = per_device * cfg.devices
    devices = [f"bench-{n:04d}" for n in range(cfg.devices)]
    paced_devices = [f"paced-{n:04d}" for n in range(cfg.devices)]
    progress(f"starting private PostgreSQL, Redis, Mosquitto ({cfg.devices} devices, "
             f"{total} messages of {len(METRICS)} values"
             f"{', each with a unit' if cfg.units else ''})")
    pg = start_postgres(durable=True)
    rd = start_redis()
    broker = start_broker(devices=devices + paced_devices)
    ingestors: list[ServiceProcess] = []
    try:
        dsn = pg.spec.dsn()
        asyncio.run(migrate(dsn))
        credentials = {d: broker.credentials[d] for d in devices}
        progress("phase 1: broker raw QoS 1 pass-through (no ingestor)")
        raw = measure_raw_passthrough(broker, credentials, per_device, cfg.units)
        progress(f"  {raw.rate:,.0f} messages/s")
        for n in range(cfg.replicas):
            env = ingestor_environment(
                dsn, rd.url, broker, **replica_overrides(broker, n, cfg.replicas),
                INSA_INGESTOR_BATCH_MAX_MESSAGES=str(cfg.batch_max_messages),
                INSA_INGESTOR_BATCH_MAX_AGE_MS=str(cfg.batch_max_age_ms),
                INSA_INGESTOR_RECEIVE_MAXIMUM=str(cfg.receive_maximum), INSA_ENV="production",
                # Its devices publish thousands of messages/s each: far over the flood
                # guard's default limit, which still runs (its cost is measured).
                INSA_INGESTOR_DEVICE_RATE_LIMIT="1000000",
                INSA_LOG_LEVEL="WARNING")
            log_path = pg.spec.datadir.parent / f"ingestor-{n}.log"
            ingestors.append(ServiceProcess(INGESTOR, env, log_path))
            ingestors[-1].start()
        progress(f"phase 2: ingest with {cfg.replicas} ingestor(s) "
                 "(publish → committed in PostgreSQL → streamed → acked)")
        phase, cpu_seconds = measure_ingest(ingestors, broker, credentials, per_device,
                                            units=cfg.units)
        latencies, stream_lost, stream_dups = check_stream(rd.url, credentials, per_device)
        paced_rate = phase.rate * cfg.paced_fraction
        paced_per_device = max(1, round(paced_rate * cfg.paced_seconds / cfg.devices))
        progress(f"phase 3: latency at a steady {paced_rate:,.0f} messages/s "
                 f"for {cfg.paced_seconds:.0f} s")
        paced_credentials = {d: broker.credentials[d] for d in paced_devices}
        measure_ingest(ingestors, broker, paced_credentials, paced_per_device,
                       rate_per_device=paced_rate / cfg.devices, units=cfg.units)
        paced, paced_lost, paced_dups = check_stream(rd.url, paced_credentials,
                                                     paced_per_device)
        paced_total = paced_per_device * cfg.devices
        stored_lost, stored_dups = asyncio.run(check_storage(dsn, total + paced_total))
        result: dict[str, Any] = {
            "config": asdict(cfg),
            "messages": total,
            "values": total * len(METRICS),
            "seconds": round(phase.seconds, 3),
            "messages_per_s": round(phase.rate),
            "values_per_s": round(phase.rate * len(METRICS)),
            "ingestor_cpu_seconds": round(cpu_seconds, 2),
            "messages_per_cpu_second": round(total / cpu_seconds) if cpu_seconds else None,
            "latency_ms": latency_summary(latencies),
            "paced": {"messages_per_s": round(paced_rate), "messages": paced_total,
                      "latency_ms": latency_summary(paced)},
            "lost": {"storage": stored_lost, "stream": stream_lost + paced_lost},
            "duplicated": {"storage": stored_dups, "stream": stream_dups + paced_dups},
            "broker_raw_messages_per_s": round(raw.rate),
            "ratio_to_raw": round(phase.rate / raw.rate, 3) if raw.rate else None,
            "cpus": os.cpu_count(),
        }
        return result
    finally:
        for ingestor in ingestors:
            ingestor.stop()
        stop_and_remove(broker, rd, pg)


def report(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    paced = result["paced"]
    plat = paced["latency_ms"]
    return "\n".join([
        f"ingest: {result['messages']:,} messages ({result['values']:,} values"
        f"{', each with a unit' if result['config'].get('units') else ''}) "
        f"in {result['seconds']} s, {result['config']['replicas']} ingestor(s)",
        f"  sustained        {result['messages_per_s']:,} messages/s, "
        f"{result['values_per_s']:,} values/s",
        f"  broker raw QoS 1 {result['broker_raw_messages_per_s']:,} messages/s "
        f"(ingest = {result['ratio_to_raw']:.0%} of raw)",
        f"  ingestor CPU     {result['ingestor_cpu_seconds']} s "
        f"({result['messages_per_cpu_second']:,} messages per CPU-second)",
        f"  publish→commit   at saturation: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, "
        f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms (queueing)",
        f"                   at {paced['messages_per_s']:,} msg/s: p50 {plat['p50']:.0f} ms, "
        f"p95 {plat['p95']:.0f} ms, p99 {plat['p99']:.0f} ms, max {plat['max']:.0f} ms",
        f"  lost             storage {result['lost']['storage']}, "
        f"stream {result['lost']['stream']} (all phases)",
        f"  duplicated       storage {result['duplicated']['storage']}, "
        f"stream {result['duplicated']['stream']} (all phases)",
    ])
