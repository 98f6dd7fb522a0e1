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
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from devtools.bench.consumers import BacklogSampler, start_service
from devtools.bench.ingest_checks import check_readings, check_storage, count_rejects
from devtools.bench.ingest_fleets import (
    Fleet,
    account_ids,
    provision_gateways,
    register_devices,
    register_gateways,
)
from devtools.bench.ingest_progress import StreamProgress, rows_written
from devtools.bench.measure import CpuSampler, latency_summary
from devtools.bench.publishers import METRICS
from devtools.bench.sparkplug_publisher import (
    GROUP,
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
from services.ingestor.settings import IngestorSettings
from shared.broker_accounts import SPARKPLUG_ACCOUNT
from shared.migrate import migrate
from shared.mqtt import GATEWAY_TELEMETRY_FILTER, TELEMETRY_FILTER
from shared.sparkplug.topics import NAMESPACE

VIAS = ("device", "gateway", "sparkplug")
INGESTOR_DEFAULTS = IngestorSettings.model_fields
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
    # The ingestor's own defaults (its settings).
    batch_max_messages: int = INGESTOR_DEFAULTS["batch_max_messages"].default
    batch_max_age_ms: float = INGESTOR_DEFAULTS["batch_max_age_ms"].default
    receive_maximum: int = INGESTOR_DEFAULTS["receive_maximum"].default
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
    # Phase 2's messages all malformed (devices only): what a reject costs against a
    # stored reading (publishers.reading).
    malformed: bool = False


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


def measure_fleet(ingestors: list[ServiceProcess], broker: RunningBroker, fleet: Fleet,
                  redis_url: str, rate_per_account: float | None = None,
                  host_id: str | None = None, servers: dict[str, CpuSampler] | None = None
                  ) -> tuple[Phase, float, bool, dict[str, float]]:
    """Publish and wait until every value is committed; returns the phase (what was
    stored, and how long it took), the ingestors' CPU seconds, whether every value came,
    and the CPU seconds of each of `servers` over the same time. On the
    QoS 1 paths a value that does not come is an error (after 900 s); with Sparkplug,
    which has no redelivery, the wait ends `STALL_SECONDS` after the publishers finished
    and no row came, and the phase ends at the last row. Progress is read from the
    stream (StreamProgress); a malformed fleet has none, so its rejects are counted from
    the ingestors' /metrics, read every 50 ms."""
    target = fleet.readings * len(METRICS)
    rows_before = rows_written(ingestors, fleet.malformed)
    stream = None if fleet.malformed else StreamProgress(redis_url)
    cpus = [CpuSampler(i.proc.pid) for i in ingestors if i.proc is not None]
    cpu_before = sum(c.seconds() for c in cpus)
    servers = servers or {}
    servers_before = {name: c.seconds() for name, c in servers.items()}
    started, started_wall = time.monotonic(), time.time()
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
        if stream is not None:
            if stream.advanced():
                last_row_at = time.monotonic()
            if stream.since() < fleet.readings:
                continue  # the ingestors' own count is read only once it may be done
        got = rows_written(ingestors, fleet.malformed) - rows_before
        if got > written:
            written, last_row_at = got, time.monotonic()
    if stream is not None and written < target:  # stalled: what came, by their count
        written = rows_written(ingestors) - rows_before
    complete = written >= target
    if stream is not None:
        elapsed = stream.last_entry_at() - started_wall
    else:
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


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    if cfg.via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, not {cfg.via!r}")
    if cfg.malformed and cfg.via != "device":
        raise ValueError("malformed messages are a device fleet's")
    via = cfg.via
    per_account = cfg.messages // cfg.devices
    qos = cfg.sparkplug_qos if via == "sparkplug" else 1
    accounts = account_ids(via, "bench", cfg.devices)
    paced_accounts = account_ids(via, "paced", cfg.devices)
    what = {"device": f"{cfg.devices} devices",
            "gateway": f"{cfg.devices} gateways of {cfg.children} children",
            "sparkplug": f"{cfg.devices} edge nodes of {cfg.children} devices, "
                         f"QoS {qos}"}[via]
    fleet = Fleet(via, dict.fromkeys(accounts, ""), cfg.children, per_account, cfg.units, qos,
                  malformed=cfg.malformed)
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
        sampler = BacklogSampler(rd.url) if consumers else None
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
        if sampler is not None:
            sampler.start()
        phase, cpu_seconds, complete, servers_cpu = measure_fleet(
            ingestors, broker, fleet, rd.url, None if cfg.rate is None
            else cfg.rate / fleet.readings_per_message / cfg.devices, host_id, servers)
        backlog = None
        if sampler is not None:
            sampler.stop()
            backlog = sampler.summary(sampler.drain())
        # A malformed fleet's messages are all rejects: none is streamed or stored.
        latencies, stream_lost, stream_dups = check_readings(
            rd.url, {} if cfg.malformed else fleet.readings_by_device(),
            by_seq=via != "sparkplug")
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
            ingestors, broker, paced_fleet, rd.url, paced_per_account_rate, host_id)
        paced, paced_lost, paced_dups = check_readings(
            rd.url, paced_fleet.readings_by_device(), by_seq=via != "sparkplug")
        total = fleet.readings
        stored_lost, stored_dups = asyncio.run(check_storage(
            dsn, (0 if cfg.malformed else total) + paced_fleet.readings))
        rejects = asyncio.run(count_rejects(dsn))
        if cfg.malformed:  # each one recorded as a reject, or lost
            stored_lost += fleet.messages - rejects.get("schema_violation", 0)
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


