"""`insa bench flood`: what one device publishing as fast as it can does to the others.

On private servers, a few well-behaved devices publish at a steady rate while one
device floods through `mosquitto_pub` (QoS 0 or 1, as fast as it goes) for a few
seconds. It reports the well-behaved devices' latency (reading time to stream
entry) before, during and after the flood, with the flood guard off and on,
and what became of the flood: stored, rejected as `rate_limited`, and how soon
the device was suspended.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import redis

from devtools.bench.ingest_checks import check_stream
from devtools.bench.measure import latency_summary
from devtools.bench.publishers import DevicePublisher
from devtools.registry import INGESTOR
from devtools.stack.servers import start_broker, start_postgres, start_redis, stop_and_remove
from devtools.stack.service_process import ServiceProcess, ingestor_environment
from shared.migrate import migrate
from shared.mqtt import telemetry_topic

FLOODER = "flood-0000"
LINE_BATCH = 5000  # flood lines written to mosquitto_pub per write
DRAIN_WAIT_SECONDS = 120


def flood(port: int, password: str, qos: int, seconds: float) -> tuple[int, float]:
    """Publish as fast as `mosquitto_pub -l` can for `seconds` (or until the broker drops
    it); returns the lines handed over and when the flood started (epoch seconds)."""
    binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    proc = subprocess.Popen(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-u", FLOODER, "-P", password,
         "-i", FLOODER, "-q", str(qos), "-M", "2000", "-l",
         "-t", telemetry_topic(FLOODER)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    started, sent = time.time(), 0
    try:
        while time.time() - started < seconds and proc.poll() is None:
            base = int(time.time() * 1000) * 1000
            proc.stdin.write(b"".join(
                orjson.dumps({"ts": (base + n) / 1e6, "telemetry": {"flood": n}}) + b"\n"
                for n in range(LINE_BATCH)))
            sent += LINE_BATCH
        proc.stdin.close()
    except BrokenPipeError:
        pass  # mosquitto_pub exited
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    return sent, started


async def flood_outcome(dsn: str, flood_started: float) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM telemetry t JOIN metrics m ON m.id = t.metric
                     WHERE m.name = 'flood') AS stored,
                   (SELECT coalesce(sum(message_count), 0) FROM rejected_messages
                     WHERE reason = 'rate_limited') AS rate_limited,
                   (SELECT min(at) FROM audit_log WHERE action = 'device.suspend') AS suspended
            """)
    finally:
        await conn.close()
    suspended = row["suspended"]
    return {"stored": row["stored"], "rate_limited": row["rate_limited"],
            "suspended_after_s": round(suspended.timestamp() - flood_started, 2)
            if suspended else None}


def scenario(guard: bool, qos: int, flood_seconds: float, victims: int, victim_rate: float,
             progress: Callable[[str], None]) -> dict[str, Any]:
    """Fresh servers; victims publish for quiet + flood + quiet seconds; one flood between."""
    quiet = 5.0
    ids = [f"victim-{n:04d}" for n in range(victims)]
    pg, rd = start_postgres(durable=True), start_redis()
    broker = start_broker(devices=[*ids, FLOODER])
    ingestor: ServiceProcess | None = None
    try:
        asyncio.run(migrate(pg.spec.dsn()))
        env = ingestor_environment(pg.spec.dsn(), rd.url, broker, INSA_ENV="production",
                                   INSA_LOG_LEVEL="WARNING", INSA_INGESTOR_BATCH_MAX_AGE_MS="25",
                                   # Keep every entry: the victims' are measured from it.
                                   INSA_INGESTOR_STREAM_MAX_LEN="50000000")
        if not guard:
            env["INSA_INGESTOR_DEVICE_RATE_LIMIT"] = "0"
        ingestor = ServiceProcess(INGESTOR, env, pg.spec.datadir.parent / "ingestor.log")
        ingestor.start()
        per_device = round(victim_rate * (2 * quiet + flood_seconds))
        publishers = [DevicePublisher(broker.port, d, broker.credentials[d], per_device,
                                      victim_rate) for d in ids]
        for publisher in publishers:
            publisher.start()
        time.sleep(quiet)
        progress(f"  flood guard {'on' if guard else 'off'}: flooding at QoS {qos} "
                 f"for {flood_seconds:.0f} s")
        result: list[tuple[int, float]] = []
        flooder = threading.Thread(target=lambda: result.append(
            flood(broker.port, broker.credentials[FLOODER], qos, flood_seconds)))
        flooder.start()
        for publisher in publishers:
            publisher.wait(600)
        flooder.join()
        sent, flood_started = result[0]
        credentials = {d: broker.credentials[d] for d in ids}
        # Wait for the victims' last readings (queued behind the flood without the guard),
        # for a bounded time: what is still queued then is reported as late, not lost.
        deadline = time.monotonic() + DRAIN_WAIT_SECONDS
        while time.monotonic() < deadline:
            _, late, duplicated = check_stream(rd.url, credentials, per_device)
            if not late:
                break
            time.sleep(1)
        phases = victim_phases(rd.url, credentials, flood_started, flood_seconds)
        return {"guard": guard, "qos": qos, "flood_seconds": flood_seconds,
                "flood_lines_fed": sent,
                "flood": asyncio.run(
                    flood_outcome(pg.spec.dsn(), flood_started)),
                "victims": victims, "victim_rate": victim_rate,
                "victims_late": late, "victims_duplicated": duplicated,
                "victim_latency_ms": phases}
    finally:
        if ingestor is not None:
            ingestor.stop()
        stop_and_remove(broker, rd, pg)


def victim_phases(redis_url: str, credentials: dict[str, str], flood_started: float,
                  flood_seconds: float) -> dict[str, dict[str, float]]:
    """Victim latencies split by reading time: before, during and after the flood."""
    wanted = {d.encode() for d in credentials}
    start_ms, end_ms = flood_started * 1000, (flood_started + flood_seconds) * 1000
    split: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    client = redis.Redis.from_url(redis_url)
    entries: list[Any] = client.xrange("insa:telemetry")  # type: ignore[assignment]
    for entry_id, fields in entries:
        if fields[b"device_id"] not in wanted:
            continue
        ts = int(fields[b"ts"])
        phase = "before" if ts < start_ms else "during" if ts < end_ms else "after"
        split[phase].append(int(entry_id.split(b"-")[0]) - ts)
    return {phase: latency_summary(values) for phase, values in split.items()}


def run(qos: int = 0, flood_seconds: float = 5.0, victims: int = 5, victim_rate: float = 10.0,
        progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    results = []
    for guard in (False, True):
        results.append(scenario(guard, qos, flood_seconds, victims, victim_rate, progress))
    return results


def report(results: list[dict[str, Any]]) -> str:
    lines = ["guard  victim p50 ms (before/during/after)  p95 during  flood stored  "
             f"rate_limited  suspension audited  victims late (> {DRAIN_WAIT_SECONDS} s)"]
    for r in results:
        lat = r["victim_latency_ms"]
        f = r["flood"]
        audited = f["suspended_after_s"]
        lines.append(
            f"{'on ' if r['guard'] else 'off'}    "
            f"{lat['before']['p50']:>6.0f} / {lat['during']['p50']:>7.0f} / "
            f"{lat['after']['p50']:>7.0f}        {lat['during']['p95']:>8.0f}  "
            f"{f['stored']:>12,}  {f['rate_limited']:>12,}  "
            f"{'-' if audited is None else f'{audited} s':>18}  {r['victims_late']:>12}")
    return "\n".join(lines)
