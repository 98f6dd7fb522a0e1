"""`insa bench ingest`: sustained ingest rate, publish→committed latency, lost and duplicated
readings, against the broker's raw pass-through measured in the same run.

Three ingest paths (`--via`): `device`, each device publishing its own readings
(QoS 1, `insa/devices/<id>/telemetry`); `gateway`, each gateway publishing a batch of one
reading per child device (QoS 1, `insa/gateways/<gw>/telemetry`); `sparkplug`, Sparkplug B
edge nodes publishing one DDATA per reading of a child device (QoS 0 by default, to the
ingestor's Sparkplug host). A reading is one device's ten values at one time: it is what
the three paths have in common, so readings/s compares them (a device's message is one
reading, a gateway's `--children`).

Sparkplug has no backpressure: at full speed the ingestor's host drops data while its
pipeline's window is full, and the bench reports it as lost; `--rate` caps the
publishers to find the rate it takes without loss.

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
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis

from devtools.bench.consumers import BacklogSampler, start_service
from devtools.bench.publishers import METRICS, publish_all, publish_gateways
from devtools.bench.sparkplug_publisher import (
    GROUP,
    child_ids,
    gateway_id,
    publish_nodes,
    readings_of_child,
)
from devtools.registry import ALERTS, DIAGNOSTICS, INGESTOR
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
from shared.broker_accounts import SPARKPLUG_ACCOUNT, gateway_role, sparkplug_node_role
from shared.broker_control import new_password, role_account
from shared.migrate import migrate
from shared.mqtt import GATEWAY_TELEMETRY_FILTER, TELEMETRY_FILTER
from shared.sparkplug.topics import NAMESPACE

VIAS = ("device", "gateway", "sparkplug")
SPARKPLUG_HOST_ID = "bench-host"
# Sparkplug has no redelivery: a reading the broker dropped (QoS 0; the host acks on
# arrival, so at QoS 1 too) never comes. Once the publishers are done, the wait for the
# last rows ends after this long without one.
STALL_SECONDS = 15.0
RAW_DRAIN_SECONDS = 30.0


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 100_000
    devices: int = 20  # devices, gateways (--via gateway) or edge nodes (--via sparkplug)
    batch_max_messages: int = 1000
    batch_max_age_ms: float = 25.0
    receive_maximum: int = 4000
    replicas: int = 1  # ingestor processes, each taking its partition of the devices
    # Latency under a steady load below saturation (at saturation it is queueing time):
    # this fraction of the sustained rate, for this many seconds.
    paced_fraction: float = 0.5
    paced_seconds: float = 10.0
    units: bool = False  # every value a {value, unit} object (publishers.UNITS)
    via: str = "device"
    children: int = 10  # per gateway or edge node (not used --via device)
    sparkplug_qos: int = 0
    # Phase 2's publishers held to this many readings/s in all (None: as fast as they go).
    # Sparkplug has no backpressure: the host drops data while the ingestor's window is
    # full, so its loss-free rate is found under a cap.
    rate: float | None = None
    # The diagnostics and alerts services running too, their stream backlog sampled.
    pipeline: bool = False


@dataclass
class Phase:
    messages: int
    seconds: float
    readings: int = 0  # 0: as many as messages

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def readings_rate(self) -> float:
        return (self.readings or self.messages) / self.seconds if self.seconds else 0.0


@dataclass
class Fleet:
    """Who publishes in one phase: devices, gateways with children, or Sparkplug edge
    nodes with children; `accounts` are their broker accounts (id → password)."""

    via: str
    accounts: dict[str, str]
    children: int
    per_account: int = 0  # messages each account publishes
    units: bool = False
    qos: int = 1
    rebirths_asked: int = 0  # Sparkplug: rebirths the host asked the nodes for
    children_of: dict[str, list[str]] = field(default_factory=dict)  # platform device ids

    def __post_init__(self) -> None:
        if self.via == "device":
            self.children = 1
        for account in self.accounts:
            self.children_of[account] = (
                [account] if self.via == "device"
                else [f"{account}-child-{k}" for k in range(self.children)]
                if self.via == "gateway"
                else [f"{account}:{c}" for c in child_ids(self.children)])

    @property
    def messages(self) -> int:
        return self.per_account * len(self.accounts)

    @property
    def readings_per_message(self) -> int:
        """A gateway's batch holds a reading of each child; a device's message and a
        Sparkplug DDATA are one reading."""
        return self.children if self.via == "gateway" else 1

    def readings_by_device(self) -> dict[str, int]:
        """Each platform device's readings in this phase."""
        if self.via != "sparkplug":
            return {d: self.per_account for ds in self.children_of.values() for d in ds}
        return {d: readings_of_child(k, self.children, self.per_account)
                for ds in self.children_of.values() for k, d in enumerate(ds)}

    @property
    def readings(self) -> int:
        return sum(self.readings_by_device().values())

    @property
    def raw_messages(self) -> int:
        """What a subscriber to all of it receives: with Sparkplug, births too."""
        births = 1 + self.children if self.via == "sparkplug" else 0
        return (self.per_account + births) * len(self.accounts)

    def publish(self, port: int, rate_per_account: float | None = None,
                host_id: str | None = None) -> None:
        """Every account's messages, to completion (`rate_per_account` messages/s each)."""
        if self.via == "device":
            publish_all(port, self.accounts, self.per_account, rate_per_account,
                        units=self.units)
        elif self.via == "gateway":
            publish_gateways(port, self.accounts, self.children_of, self.per_account,
                             rate_per_account, units=self.units)
        else:
            nodes = publish_nodes(port, self.accounts, self.children, self.per_account,
                                  rate_per_account, self.qos, host_id)
            self.rebirths_asked += sum(n.rebirths_asked for n in nodes)


def account_ids(via: str, prefix: str, count: int) -> list[str]:
    if via == "device":
        return [f"{prefix}-{n:04d}" for n in range(count)]
    if via == "gateway":
        return [f"{prefix}-gw-{n:04d}" for n in range(count)]
    return [gateway_id(f"{'node' if prefix == 'bench' else prefix}-{n:04d}")
            for n in range(count)]


def provision_gateways(broker: RunningBroker, via: str, gateways: list[str]) -> None:
    """Each gateway's (or edge node's) broker account and role, as the platform makes them."""
    with broker.admin() as admin:
        for gw in gateways:
            password = new_password()
            role = gateway_role(gw) if via == "gateway" else sparkplug_node_role(gw)
            admin.execute(*role_account(gw, role, password))
            broker.credentials[gw] = password


async def register_gateways(dsn: str, via: str, gateways: list[str]) -> None:
    """Gateway rows that register their children on first sight (auto_register)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO gateways (gateway_id, protocol, auto_register) VALUES ($1, $2, true)",
            [(gw, "sparkplug" if via == "sparkplug" else "json") for gw in gateways])
    finally:
        await conn.close()


async def register_devices(dsn: str, devices: list[str]) -> None:
    """Device rows, as provisioning makes them: a partitioned replica subscribes to its
    registered devices' topics only."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO devices (device_id) SELECT unnest($1::text[])", devices)
    finally:
        await conn.close()


def measure_raw(broker: RunningBroker, fleet: Fleet) -> tuple[Phase, int]:
    """The ceiling: the same publishers into a C subscriber that stores nothing (the
    ingestor's account on its filter, QoS 1; for Sparkplug, the host's account on
    `spBv1.0/#`). Returns the phase and the messages the subscriber missed: at QoS 0 it
    stops waiting `RAW_DRAIN_SECONDS` after the last publish, and the phase ends then."""
    binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
    account, topic = ("insa-ingestor", TELEMETRY_FILTER if fleet.via == "device"
                      else GATEWAY_TELEMETRY_FILTER)
    if fleet.via == "sparkplug":
        account, topic = SPARKPLUG_ACCOUNT, f"{NAMESPACE}/#"
    expected = fleet.raw_messages
    # At QoS 0 what arrived is counted: one line (the topic) per message.
    out = tempfile.TemporaryFile() if not fleet.qos else None
    sub = subprocess.Popen(
        [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-u", account,
         "-P", broker.credentials[account], "-i", account, "-q", "1",
         "-t", topic, "-C", str(expected), *(("-F", "%t") if out else ())],
        stdout=out or subprocess.DEVNULL)
    time.sleep(0.5)  # subscribed before the first publish
    started = time.monotonic()
    fleet.publish(broker.port)
    missed = 0
    try:
        sub.wait(600 if out is None else RAW_DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        if out is None:
            raise
        sub.kill()
        sub.wait()
    if out is not None:
        out.seek(0)
        missed = expected - out.read().count(b"\n")
        out.close()
    return Phase(fleet.messages, time.monotonic() - started, fleet.readings), missed


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (field 3 of proc(5) first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


class CpuSampler:
    """CPU seconds (user + system) a process used, from /proc; with `children`, those of
    its children too, live and exited (PostgreSQL's backends are the postmaster's)."""

    def __init__(self, pid: int, children: bool = False) -> None:
        self.pid = pid
        self.children = children

    def seconds(self) -> float:
        fields = _stat(self.pid)
        ticks = int(fields[11]) + int(fields[12])
        if self.children:
            ticks += int(fields[13]) + int(fields[14])  # exited children, once reaped
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        child = _stat(entry.name)
                    except OSError:
                        continue  # exited meanwhile
                    if int(child[1]) == self.pid:
                        ticks += int(child[11]) + int(child[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def rows_written(ingestors: list[ServiceProcess]) -> float:
    return sum(i.metric("insa_ingestor_rows_written_total") for i in ingestors)


def measure_fleet(ingestors: list[ServiceProcess], broker: RunningBroker, fleet: Fleet,
                  rate_per_account: float | None = None, host_id: str | None = None,
                  servers: dict[str, CpuSampler] | None = None
                  ) -> tuple[Phase, float, bool, dict[str, float]]:
    """Publish and wait until every value is committed; returns the phase (what was
    stored, and how long it took), the ingestors' CPU seconds, whether every value came,
    and the CPU seconds of each of `servers` over the same time. On the
    QoS 1 paths a value that does not come is an error (after 900 s); with Sparkplug,
    which has no redelivery, the wait ends `STALL_SECONDS` after the publishers finished
    and no row came, and the phase ends at the last row."""
    target = fleet.readings * len(METRICS)
    rows_before = rows_written(ingestors)
    cpus = [CpuSampler(i.proc.pid) for i in ingestors if i.proc is not None]
    cpu_before = sum(c.seconds() for c in cpus)
    servers = servers or {}
    servers_before = {name: c.seconds() for name, c in servers.items()}
    started = time.monotonic()
    failure: list[BaseException] = []

    def publish() -> None:
        try:
            fleet.publish(broker.port, rate_per_account, host_id)
        except BaseException as exc:  # raised below, in the caller's thread
            failure.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    deadline = started + 900
    written, last_row_at = 0.0, started
    while written < target:
        if failure:
            raise RuntimeError(f"publisher failed: {failure[0]}") from failure[0]
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"ingest did not finish in 900 s:\n{ingestors[0].log()}")
        if fleet.via == "sparkplug" and not publisher.is_alive() \
                and now - last_row_at > STALL_SECONDS:
            break
        time.sleep(0.05)
        got = rows_written(ingestors) - rows_before
        if got > written:
            written, last_row_at = got, time.monotonic()
    complete = written >= target
    elapsed = (time.monotonic() if complete else last_row_at) - started
    cpu_used = sum(c.seconds() for c in cpus) - cpu_before
    servers_used = {name: round(c.seconds() - servers_before[name], 2)
                    for name, c in servers.items()}
    publisher.join()
    if failure:
        raise RuntimeError(f"publisher failed: {failure[0]}") from failure[0]
    if complete:
        return Phase(fleet.messages, elapsed, fleet.readings), cpu_used, complete, servers_used
    stored = int(written) // len(METRICS)  # what came, over the time it took
    return (Phase(stored // fleet.readings_per_message, elapsed, stored), cpu_used, complete,
            servers_used)


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
    return check_readings(redis_url, {d: per_device for d in credentials})


def check_readings(redis_url: str, expected: dict[str, int], by_seq: bool = True
                   ) -> tuple[list[float], int, int]:
    """For these devices (each with its count of readings): latencies (ms, stream entry
    time minus reading ts), lost and duplicated readings. A reading is known by its
    (device, seq), seq 0 to count - 1; or, for readings without a seq (Sparkplug), by
    (device, ts), which the publisher keeps unique per device."""
    wanted = {d.encode() for d in expected}
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
            key = (fields[b"device_id"], int(fields[b"seq"] if by_seq else fields[b"ts"]))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                latencies.append(int(entry_id.split(b"-")[0]) - int(fields[b"ts"]))
        last = chunk[-1][0].decode()
    if by_seq:
        wanted_keys = {(d.encode(), s) for d, n in expected.items() for s in range(n)}
        lost = len(wanted_keys - set(seen))
    else:
        distinct: dict[bytes, int] = {}
        for device, _ts in seen:
            distinct[device] = distinct.get(device, 0) + 1
        lost = sum(max(0, n - distinct.get(d.encode(), 0)) for d, n in expected.items())
    duplicated = sum(n - 1 for n in seen.values())
    return latencies, lost, duplicated


async def check_storage(dsn: str, total: int) -> tuple[int, int]:
    """Lost readings and duplicate rows in the database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (device, time)) FROM telemetry t "
            "JOIN metrics m ON m.id = t.metric WHERE m.name = 'flow_rate'")
    finally:
        await conn.close()
    return total - distinct, rows - distinct


async def count_rejects(dsn: str) -> dict[str, int]:
    """Rejected messages by reason (none expected)."""
    conn = await asyncpg.connect(dsn)
    try:
        return {r["reason"]: r["n"] for r in await conn.fetch(
            "SELECT reason, count(*) AS n FROM rejected_messages GROUP BY reason ORDER BY 1")}
    finally:
        await conn.close()


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    if cfg.via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, not {cfg.via!r}")
    via = cfg.via
    per_account = cfg.messages // cfg.devices
    qos = cfg.sparkplug_qos if via == "sparkplug" else 1
    accounts = account_ids(via, "bench", cfg.devices)
    paced_accounts = account_ids(via, "paced", cfg.devices)
    what = {"device": f"{cfg.devices} devices",
            "gateway": f"{cfg.devices} gateways of {cfg.children} children",
            "sparkplug": f"{cfg.devices} edge nodes of {cfg.children} devices, "
                         f"QoS {qos}"}[via]
    fleet = Fleet(via, dict.fromkeys(accounts, ""), cfg.children, per_account, cfg.units, qos)
    progress(f"starting private PostgreSQL, Redis, Mosquitto (via {via}: {what}, "
             f"{fleet.messages} messages, {fleet.readings} readings of {len(METRICS)} values"
             f"{', each with a unit' if cfg.units else ''})")
    pg = start_postgres(durable=True)
    rd = start_redis()
    broker = start_broker(devices=accounts + paced_accounts if via == "device" else ())
    ingestors: list[ServiceProcess] = []
    consumers: list[ServiceProcess] = []
    try:
        dsn = pg.spec.dsn()
        asyncio.run(migrate(dsn))
        if via == "device":
            asyncio.run(register_devices(dsn, accounts + paced_accounts))
        else:
            provision_gateways(broker, via, accounts + paced_accounts)
            asyncio.run(register_gateways(dsn, via, accounts + paced_accounts))
        fleet.accounts = {a: broker.credentials[a] for a in accounts}
        raw_what = "QoS 1" if qos else "QoS 0 (Sparkplug)"
        progress(f"phase 1: broker raw {raw_what} pass-through (no ingestor)")
        raw, raw_missed = measure_raw(broker, fleet)
        progress(f"  {raw.rate:,.0f} messages/s"
                 + (f", {raw.readings_rate:,.0f} readings/s" if via != "device" else ""))
        for n in range(cfg.replicas):
            sparkplug = {"INSA_INGESTOR_SPARKPLUG_HOST_ID": SPARKPLUG_HOST_ID,
                         "INSA_INGESTOR_SPARKPLUG_PASSWORD":
                             broker.credentials[SPARKPLUG_ACCOUNT]} \
                if via == "sparkplug" and n == 0 else {}  # the host: on one replica only
            env = ingestor_environment(
                dsn, rd.url, broker, **replica_overrides(broker, n, cfg.replicas),
                INSA_INGESTOR_BATCH_MAX_MESSAGES=str(cfg.batch_max_messages),
                INSA_INGESTOR_BATCH_MAX_AGE_MS=str(cfg.batch_max_age_ms),
                INSA_INGESTOR_RECEIVE_MAXIMUM=str(cfg.receive_maximum), INSA_ENV="production",
                # Its devices publish thousands of messages/s each: far over the flood
                # guard's default limit, which still runs (its cost is measured).
                INSA_INGESTOR_DEVICE_RATE_LIMIT="1000000",
                INSA_LOG_LEVEL="WARNING", **sparkplug,
                # With consumers, the entries they are done with would be trimmed before
                # the loss check reads the stream back: no trim within the bench.
                **({"INSA_INGESTOR_STREAM_TRIM_INTERVAL_SECONDS": "86400"}
                   if cfg.pipeline else {}))
            log_path = pg.spec.datadir.parent / f"ingestor-{n}.log"
            ingestors.append(ServiceProcess(INGESTOR, env, log_path))
            ingestors[-1].start()
        consumers = [start_service(s, dsn, rd.url, broker, pg.spec.datadir.parent)
                     for s in (DIAGNOSTICS, ALERTS)] if cfg.pipeline else []
        sampler = BacklogSampler(rd.url)
        host_id = SPARKPLUG_HOST_ID if via == "sparkplug" else None
        capped = "" if cfg.rate is None else f", publishers capped at {cfg.rate:,.0f} readings/s"
        progress(f"phase 2: ingest with {cfg.replicas} ingestor(s) "
                 "(publish → committed in PostgreSQL → streamed"
                 f"{'' if via == 'sparkplug' else ' → acked'}{capped})")
        servers = {name: CpuSampler(proc.pid, children=name == "postgres")
                   for name, proc in (("postgres", pg.proc), ("broker", broker.proc),
                                      ("redis", rd.proc)) if proc is not None}
        servers.update((c.service.name, CpuSampler(c.proc.pid)) for c in consumers
                       if c.proc is not None)
        sampler.start()
        phase, cpu_seconds, complete, servers_cpu = measure_fleet(
            ingestors, broker, fleet, None if cfg.rate is None
            else cfg.rate / fleet.readings_per_message / cfg.devices, host_id, servers)
        sampler.stop()
        backlog = sampler.summary(sampler.drain()) if consumers else None
        latencies, stream_lost, stream_dups = check_readings(
            rd.url, fleet.readings_by_device(), by_seq=via != "sparkplug")
        paced_rate = phase.readings_rate * cfg.paced_fraction  # readings/s in all
        paced_per_account_rate = paced_rate / fleet.readings_per_message / cfg.devices
        paced_fleet = Fleet(via, {a: broker.credentials[a] for a in paced_accounts},
                            cfg.children, max(1, round(paced_per_account_rate
                                                       * cfg.paced_seconds)),
                            cfg.units, qos)
        progress(f"phase 3: latency at a steady {paced_rate:,.0f} "
                 f"{'messages' if via == 'device' else 'readings'}/s "
                 f"for {cfg.paced_seconds:.0f} s")
        _paced_phase, _paced_cpu, paced_complete, _ = measure_fleet(
            ingestors, broker, paced_fleet, paced_per_account_rate, host_id)
        paced, paced_lost, paced_dups = check_readings(
            rd.url, paced_fleet.readings_by_device(), by_seq=via != "sparkplug")
        total = fleet.readings
        stored_lost, stored_dups = asyncio.run(check_storage(dsn, total + paced_fleet.readings))
        rejects = asyncio.run(count_rejects(dsn))
        result: dict[str, Any] = {
            "config": asdict(cfg),
            "via": via,
            "children": None if via == "device" else cfg.children,
            "messages": fleet.messages,
            "readings": total,
            "readings_stored": phase.readings,  # in phase 2 (less than sent: lost)
            "values": total * len(METRICS),
            "seconds": round(phase.seconds, 3),
            "rate_cap_readings_per_s": cfg.rate,
            "messages_per_s": round(phase.rate),
            "readings_per_s": round(phase.readings_rate),
            "values_per_s": round(phase.readings_rate * len(METRICS)),
            "ingestor_cpu_seconds": round(cpu_seconds, 2),
            "servers_cpu_seconds": servers_cpu,
            "consumers_backlog": backlog,
            "messages_per_cpu_second": round(phase.messages / cpu_seconds)
            if cpu_seconds else None,
            "readings_per_cpu_second": round(phase.readings / cpu_seconds)
            if cpu_seconds else None,
            "latency_ms": latency_summary(latencies),
            "paced": {"messages_per_s": round(paced_rate / fleet.readings_per_message),
                      "readings_per_s": round(paced_rate),
                      "messages": paced_fleet.messages, "readings": paced_fleet.readings,
                      "latency_ms": latency_summary(paced)},
            "lost": {"storage": stored_lost, "stream": stream_lost + paced_lost},
            "duplicated": {"storage": stored_dups, "stream": stream_dups + paced_dups},
            "rejects": rejects,
            # What each replica's session was sent: its own devices' messages, and any
            # of another's (none once partitioned subscriptions are in place).
            "replica_messages": [{
                "own": i.metric("insa_ingestor_messages_total"),
                "other_partition": i.metric("insa_ingestor_other_partition_total")}
                for i in ingestors],
            "broker_raw_messages_per_s": round(raw.rate),
            "broker_raw_readings_per_s": round(raw.readings_rate),
            "ratio_to_raw": round(phase.rate / raw.rate, 3) if raw.rate else None,
            "cpus": os.cpu_count(),
        }
        if via == "sparkplug":
            result["sparkplug"] = {
                "qos": qos, "group": GROUP, "host_id": SPARKPLUG_HOST_ID,
                "all_values_came": {"ingest": complete, "paced": paced_complete},
                "rebirths_asked": fleet.rebirths_asked + paced_fleet.rebirths_asked,
                "raw_lost": raw_missed}
        return result
    finally:
        for process in (*ingestors, *consumers):
            process.stop()
        stop_and_remove(broker, rd, pg)


def report(result: dict[str, Any]) -> str:
    if result.get("via", "device") == "device":
        return report_device(result)
    return report_children(result)


def report_device(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    paced = result["paced"]
    plat = paced["latency_ms"]
    return "\n".join([
        f"ingest: {result['messages']:,} messages ({result['values']:,} values"
        f"{', each with a unit' if result['config'].get('units') else ''}) "
        f"in {result['seconds']} s, {result['config']['replicas']} ingestor(s)",
        f"  sustained        {result['messages_per_s']:,} messages/s, "
        f"{result['values_per_s']:,} values/s"
        + ("" if result.get("rate_cap_readings_per_s") is None
           else f" (publishers capped at {result['rate_cap_readings_per_s']:,.0f} messages/s)"),
        f"  broker raw QoS 1 {result['broker_raw_messages_per_s']:,} messages/s "
        f"(ingest = {result['ratio_to_raw']:.0%} of raw)",
        f"  ingestor CPU     {result['ingestor_cpu_seconds']} s "
        f"({result['messages_per_cpu_second']:,} messages per CPU-second)",
        *_servers_line(result),
        *_replicas_line(result),
        *_backlog_line(result),
        f"  publish→commit   {_phase2(result)}: p50 {lat['p50']:.0f} ms, "
        f"p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
        f"{' (queueing)' if result.get('rate_cap_readings_per_s') is None else ''}",
        f"                   at {paced['messages_per_s']:,} msg/s: p50 {plat['p50']:.0f} ms, "
        f"p95 {plat['p95']:.0f} ms, p99 {plat['p99']:.0f} ms, max {plat['max']:.0f} ms",
        f"  lost             storage {result['lost']['storage']}, "
        f"stream {result['lost']['stream']} (all phases)",
        f"  duplicated       storage {result['duplicated']['storage']}, "
        f"stream {result['duplicated']['stream']} (all phases)",
        *_rejects_line(result),
    ])


def report_children(result: dict[str, Any]) -> str:
    """--via gateway or sparkplug: messages and readings apart (readings/s compares)."""
    cfg = result["config"]
    lat = result["latency_ms"]
    paced = result["paced"]
    plat = paced["latency_ms"]
    sparkplug = result.get("sparkplug")
    who = (f"{cfg['devices']} gateways of {result['children']} children" if sparkplug is None
           else f"{cfg['devices']} edge nodes of {result['children']} devices, "
                f"DDATA at QoS {sparkplug['qos']}")
    raw = "QoS 1" if sparkplug is None or sparkplug["qos"] else "QoS 0"
    lines = [
        f"ingest via {result['via']}: {who}",
        f"  {result['messages']:,} messages = {result['readings']:,} readings "
        f"({result['values']:,} values{', each with a unit' if cfg.get('units') else ''}) "
        + (f"in {result['seconds']} s" if result["readings_stored"] >= result["readings"]
           else f"sent, {result['readings_stored']:,} stored in {result['seconds']} s "
                "(to the last that came)")
        + f", {cfg['replicas']} ingestor(s)",
        f"  sustained        {result['readings_per_s']:,} readings/s "
        f"({result['messages_per_s']:,} messages/s, {result['values_per_s']:,} values/s"
        + ("" if result.get("rate_cap_readings_per_s") is None
           else f"; publishers capped at {result['rate_cap_readings_per_s']:,.0f} readings/s")
        + ")",
        f"  broker raw {raw} {result['broker_raw_readings_per_s']:,} readings/s "
        f"({result['broker_raw_messages_per_s']:,} messages/s; "
        f"ingest = {result['ratio_to_raw']:.0%} of raw)",
        f"  ingestor CPU     {result['ingestor_cpu_seconds']} s "
        f"({result['readings_per_cpu_second']:,} readings per CPU-second)",
        *_servers_line(result),
        f"  publish→commit   {_phase2(result)}: p50 {lat['p50']:.0f} ms, "
        f"p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
        f"{' (queueing)' if result.get('rate_cap_readings_per_s') is None else ''}",
        f"                   at {paced['readings_per_s']:,} readings/s: "
        f"p50 {plat['p50']:.0f} ms, p95 {plat['p95']:.0f} ms, p99 {plat['p99']:.0f} ms, "
        f"max {plat['max']:.0f} ms",
        f"  lost             storage {result['lost']['storage']}, "
        f"stream {result['lost']['stream']} readings (all phases)",
        f"  duplicated       storage {result['duplicated']['storage']}, "
        f"stream {result['duplicated']['stream']} readings (all phases)",
    ]
    if sparkplug is not None:
        came = sparkplug["all_values_came"]
        raw_lost = sparkplug.get("raw_lost")
        lines.append(f"  sparkplug        every value came: ingest "
                     f"{'yes' if came['ingest'] else 'NO'}, paced "
                     f"{'yes' if came['paced'] else 'NO'}; rebirths asked "
                     f"{sparkplug['rebirths_asked']}"
                     + (f"; raw subscriber missed {raw_lost} messages" if raw_lost else ""))
    return "\n".join([*lines, *_rejects_line(result)])


def _phase2(result: dict[str, Any]) -> str:
    cap = result.get("rate_cap_readings_per_s")
    return "at saturation" if cap is None else f"under the {cap:,.0f}/s cap"


def _servers_line(result: dict[str, Any]) -> list[str]:
    """The servers' CPU over phase 2: where the rest of the machine's time went."""
    cpu = result.get("servers_cpu_seconds")
    if not cpu:
        return []
    return ["  servers CPU      " + ", ".join(f"{name} {seconds} s" for name, seconds in
                                              cpu.items())]


def _replicas_line(result: dict[str, Any]) -> list[str]:
    """With replicas: the messages each was sent (all phases), its own and others'."""
    replicas = result.get("replica_messages") or []
    if len(replicas) < 2:
        return []
    return ["  per replica      " + ", ".join(
        f"{r['own']:,.0f} own + {r['other_partition']:,.0f} other" for r in replicas)]


def _backlog_line(result: dict[str, Any]) -> list[str]:
    """--pipeline: each consumer group's stream backlog over phase 2, and its drain."""
    backlog = result.get("consumers_backlog")
    if not backlog:
        return []
    drained = backlog["drained_after_s"]
    return ["  stream backlog   " + ", ".join(
        f"{group} largest {n:,}, at end {backlog['at_end'].get(group, 0):,}"
        for group, n in backlog["largest"].items())
        + ("; not drained in 300 s" if drained is None else f"; drained {drained} s after")]


def _rejects_line(result: dict[str, Any]) -> list[str]:
    rejects = result.get("rejects") or {}
    if not rejects:
        return []
    return ["  rejected         " + ", ".join(f"{reason} {n}" for reason, n in rejects.items())]
