"""`insa bench alerts`: how many metric values one alert engine evaluates per second, and
how long a reading takes to become a published alert.

1. engine: the pure engine (shared/alerting/evaluation.py) in this process, 200 rules of
   every type over the simulated fleet (services/simulator: physical wells, some faulty,
   setpoint steps and stops), timers ticked once per reading interval;
2. service: the alerts service on private PostgreSQL (durable), Redis and Mosquitto
   draining an `insa:telemetry` stream filled beforehand with the same readings (decode,
   evaluate, commit transitions and progress, acknowledge, publish);
3. latency: broker, ingestor, diagnostics and alerts running, devices publishing over
   MQTT at a steady rate; now and then a device trips a rule that fires at once and
   clears it again. Latency is the reading's `ts` (taken as it is published) to the
   arrival of its firing or resolved event at a subscriber on `insa/alerts/#`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as paho

from devtools.bench.consumers import start_service
from devtools.bench.diagnose import BenchConfig as FleetBenchConfig
from devtools.bench.diagnose import fill_stream, fleet
from devtools.bench.measure import CpuSampler, latency_summary
from devtools.bench.publishers import METRICS
from devtools.registry import ALERTS, DIAGNOSTICS, INGESTOR
from devtools.stack.servers import (
    RunningBroker,
    start_broker,
    start_postgres,
    start_redis,
    stop_and_remove,
)
from devtools.stack.service_process import ServiceProcess
from shared.alerting.evaluation import Device, Engine
from shared.alerting.rules import Rule, parse_rule, stored_form
from shared.diagnosis.catalog import DIAGNOSIS_CODES
from shared.diagnosis.events import Reading
from shared.migrate import migrate
from shared.mqtt import ALERTS_FILTER, telemetry_topic

TRIP_METRIC = "bench_trip"  # phase 3: 1 trips the latency rule, 0 clears it


@dataclass(frozen=True)
class BenchConfig:
    wells: int = 100
    hours: float = 6.0
    interval: float = 60.0
    engine_runs: int = 3
    latency_devices: int = 100
    latency_rate: float = 1.0  # readings per second per device
    latency_seconds: float = 30.0
    trip_every: float = 5.0  # s between one device's trips (and clears)


# --- the rule set ------------------------------------------------------------------------
def device_profile(index: int) -> Device:
    """Two pump types, two fields and ten pads across the fleet (scopes by type and tag)."""
    return Device("esp-a" if index % 2 == 0 else "esp-b",
                  frozenset({"field-north" if index % 4 < 2 else "field-south",
                             f"pad-{index % 10}"}))


def bench_rules(device_ids: list[str]) -> list[dict[str, Any]]:
    """200 rules as an operator might write them for a 100-well field: a limit per well,
    bands and trends per pump type and field, fleet-wide checks, and the diagnoses."""
    rules: list[dict[str, Any]] = []
    well_limits = (("motor_temp", ">", 110.0), ("vibration", ">", 4.0),
                   ("motor_current", ">", 75.0), ("pip", "<", 400.0), ("flow_rate", "<", 300.0))
    for n in range(100):  # one per well, on one of five metrics
        metric, op, value = well_limits[n % len(well_limits)]
        rules.append({"type": "threshold", "name": f"well {n} {metric}", "metric": metric,
                      "op": op, "value": value, "for_seconds": 300,
                      "scope": {"device_id": device_ids[n % len(device_ids)]}})
    scopes = ({"device_type": "esp-a"}, {"device_type": "esp-b"}, {"tag": "field-north"},
              {"tag": "field-south"})
    for n, scope in enumerate(scopes):  # 10 per scope
        tag = f"{n}"
        rules += [
            {"type": "range", "name": f"pip band {tag}", "metric": "pip", "low": 300,
             "high": 3000, "clear_low": 350, "clear_high": 2900, "scope": scope},
            {"type": "range", "name": f"current band {tag}", "metric": "motor_current",
             "low": 5, "high": 90, "clear_low": 6, "clear_high": 85, "scope": scope},
            {"type": "range", "name": f"frequency band {tag}", "metric": "vsd_frequency",
             "low": 30, "high": 70, "clear_low": 31, "clear_high": 69, "scope": scope,
             "for_seconds": 120},
            {"type": "rate_of_change", "name": f"temp rise {tag}", "metric": "motor_temp",
             "window_seconds": 900, "per_seconds": 60, "op": ">", "value": 2.0, "scope": scope},
            {"type": "rate_of_change", "name": f"pip fall {tag}", "metric": "pip",
             "window_seconds": 1800, "per_seconds": 60, "op": "<", "value": -20, "scope": scope},
            {"type": "window", "name": f"vibration avg {tag}", "metric": "vibration",
             "stat": "avg", "window_seconds": 1800, "op": ">", "value": 5.0, "scope": scope},
            {"type": "window", "name": f"temp max {tag}", "metric": "motor_temp",
             "stat": "max", "window_seconds": 3600, "op": ">", "value": 130, "scope": scope},
            {"type": "window", "name": f"flow min {tag}", "metric": "flow_rate",
             "stat": "min", "window_seconds": 1800, "op": "<", "value": 50, "scope": scope},
            {"type": "window", "name": f"current stddev {tag}", "metric": "motor_current",
             "stat": "stddev", "window_seconds": 1800, "op": ">", "value": 8, "scope": scope},
            {"type": "threshold", "name": f"discharge high {tag}",
             "metric": "discharge_pressure", "op": ">", "value": 6000, "scope": scope},
        ]
    for metric in METRICS:  # fleet-wide: a stuck transmitter, and a silent metric
        rules.append({"type": "window", "name": f"{metric} stuck", "metric": metric,
                      "stat": "stddev", "window_seconds": 3600, "op": "<", "value": 1e-9,
                      "for_seconds": 600, "severity": "warning"})
        rules.append({"type": "no_data", "name": f"{metric} silent", "metric": metric,
                      "after_seconds": 1800, "severity": "info"})
    rules += [
        {"type": "compare", "name": "no lift", "metric": "discharge_pressure", "op": "<",
         "other_metric": "pip", "offset": 300, "max_age_seconds": 300, "for_seconds": 300},
        {"type": "compare", "name": "intake hotter than motor", "metric": "intake_temp",
         "op": ">", "other_metric": "motor_temp", "max_age_seconds": 300},
        {"type": "no_data", "name": "well silent", "after_seconds": 900},
        *({"type": "threshold", "name": f"fleet {metric} high", "metric": metric, "op": ">",
           "value": value, "for_seconds": 120, "severity": "critical"}
          for metric, value in (("motor_temp", 150), ("vibration", 8), ("motor_current", 100),
                                ("gor", 3000), ("power", 1000), ("intake_temp", 150),
                                ("discharge_pressure", 8000))),
    ]
    for code in DIAGNOSIS_CODES:  # every diagnosis, warning and critical
        rules.append({"type": "diagnosis", "name": f"diagnosis {code}", "code": code,
                      "min_severity": "warning"})
    while len(rules) < 200:
        n = len(rules)
        rules.append({"type": "diagnosis", "name": f"any critical diagnosis {n}", "code": "*",
                      "min_severity": "critical", "scope": {"tag": f"pad-{n % 10}"}})
    return rules[:200]


def parsed(definitions: list[dict[str, Any]]) -> dict[int, Rule]:
    return {n: parse_rule(d) for n, d in enumerate(definitions, start=1)}


# --- phase 1: the engine alone -------------------------------------------------------------
def measure_engine(readings: list[Reading], rules: dict[int, Rule], interval: float
                   ) -> dict[str, float]:
    engine = Engine()
    for index, device_id in enumerate(sorted({r.device_id for r in readings})):
        engine.set_device(device_id, device_profile(index), 0.0)
    engine.set_rules(rules, 0.0)
    values = sum(len(r.values) for r in readings)
    transitions = 0
    next_tick = readings[0].ts
    cpu, wall = time.process_time(), time.perf_counter()
    for reading in readings:
        if reading.ts >= next_tick:  # the live engine's timer, in event time
            transitions += len(engine.tick(reading.ts))
            next_tick = reading.ts + interval
        transitions += len(engine.observe_reading(reading.device_id, reading.ts,
                                                  dict(reading.values)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    watched = sum(len(w) for w in engine._watches.values()) / max(1, len(engine._watches))
    return {"values_per_second": values / wall, "values_per_cpu_second": values / cpu,
            "transitions": transitions, "rules_per_value": watched}


# --- phase 2: the service draining a stream -------------------------------------------------
async def load_catalog(dsn: str, device_ids: list[str], definitions: list[dict[str, Any]]
                       ) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO devices (device_id, device_type, metadata) VALUES ($1, $2, $3::jsonb) "
            "ON CONFLICT (device_id) DO UPDATE SET device_type = EXCLUDED.device_type, "
            "metadata = EXCLUDED.metadata",
            [(d, device_profile(n).device_type,
              orjson.dumps({"tags": sorted(device_profile(n).tags)}).decode())
             for n, d in enumerate(device_ids)])
        await conn.executemany(
            "INSERT INTO rules (name, definition) VALUES ($1, $2::jsonb)",
            [(r.name, orjson.dumps(stored_form(r)).decode())
             for r in parsed(definitions).values()])
    finally:
        await conn.close()


def measure_service(readings: list[Reading], definitions: list[dict[str, Any]],
                    progress: Callable[[str], None]) -> dict[str, Any]:
    pg, rd, broker = start_postgres(durable=True), start_redis(), start_broker()
    service: ServiceProcess | None = None
    try:
        dsn = pg.spec.dsn()
        asyncio.run(migrate(dsn))
        device_ids = sorted({r.device_id for r in readings})
        asyncio.run(fill_stream(rd.url, dsn, readings))
        asyncio.run(load_catalog(dsn, device_ids, definitions))
        values = sum(len(r.values) for r in readings)
        service = start_service(ALERTS, dsn, rd.url, broker, pg.spec.datadir.parent)
        assert service.proc is not None
        cpu = CpuSampler(service.proc.pid)
        cpu_before, started = cpu.seconds(), time.monotonic()
        while service.metric("insa_alerts_values_total") < values:
            if time.monotonic() - started > 900:
                raise RuntimeError(f"alerts did not finish:\n{service.log()}")
            time.sleep(0.05)
        elapsed, cpu_used = time.monotonic() - started, cpu.seconds() - cpu_before
        transitions = service.metric("insa_alerts_transitions_total")
        progress(f"  {values / elapsed:,.0f} values/s, {transitions:.0f} transitions committed")
        return {"values_per_second": round(values / elapsed),
                "values_per_cpu_second": round(values / cpu_used),
                "seconds": round(elapsed, 2), "cpu_seconds": round(cpu_used, 2),
                "transitions": int(transitions)}
    finally:
        if service is not None:
            service.stop()
        stop_and_remove(broker, rd, pg)


# --- phase 3: reading → published alert -----------------------------------------------------
class AlertListener:
    """A subscriber on insa/alerts/# noting when each event arrived."""

    def __init__(self, broker: RunningBroker) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="insa-subscriber",
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set("insa-subscriber", broker.credentials["insa-subscriber"])
        self.client.on_message = lambda _c, _u, msg: self.arrivals.append(
            (time.time(), orjson.loads(msg.payload)))
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(ALERTS_FILTER, qos=1)
        self.client.loop_start()

    def latencies(self, rule: str) -> dict[str, list[float]]:
        """ms from the triggering reading (the event's started or resolved time) to arrival."""
        out: dict[str, list[float]] = {"firing": [], "resolved": []}
        for arrived, event in list(self.arrivals):
            if event["rule"] == rule and event["event"] in out:
                at = event["started_at"] if event["event"] == "firing" else event["resolved_at"]
                out[event["event"]].append((arrived - datetime.fromisoformat(at).timestamp())
                                           * 1000)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_steadily(broker: RunningBroker, device_ids: list[str], cfg: BenchConfig) -> int:
    """Every device at `latency_rate`, the fleet staggered; each one trips the latency rule
    every `trip_every` seconds and clears it with its next reading."""
    clients = []
    for device_id in device_ids:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device_id,
                             protocol=paho.MQTTv5)
        client.username_pw_set(device_id, broker.credentials[device_id])
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        clients.append(client)
    period = 1.0 / cfg.latency_rate
    trip_each = max(1, round(cfg.trip_every * cfg.latency_rate))
    sent, started = 0, time.monotonic()
    step = 0
    while time.monotonic() - started < cfg.latency_seconds:
        for n, (device_id, client) in enumerate(zip(device_ids, clients, strict=True)):
            slot = started + step * period + n * period / len(clients)
            if (delay := slot - time.monotonic()) > 0:
                time.sleep(delay)
            values: dict[str, float] = {m: 100.0 + i for i, m in enumerate(METRICS)}
            values[TRIP_METRIC] = 1.0 if (step + n) % trip_each == 0 else 0.0
            payload = orjson.dumps({"ts": round(time.time() * 1000), "telemetry": values})
            client.publish(telemetry_topic(device_id), payload, qos=1)
            sent += 1
        step += 1
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return sent


def measure_latency(cfg: BenchConfig, definitions: list[dict[str, Any]],
                    progress: Callable[[str], None]) -> dict[str, Any]:
    device_ids = [f"lat-{n:03d}" for n in range(cfg.latency_devices)]
    pg, rd = start_postgres(durable=True), start_redis()
    broker = start_broker(devices=device_ids)
    services: list[ServiceProcess] = []
    try:
        dsn = pg.spec.dsn()
        asyncio.run(migrate(dsn))
        trip = {"type": "threshold", "name": "bench trip", "metric": TRIP_METRIC, "op": ">",
                "value": 0.5, "severity": "critical"}
        asyncio.run(load_catalog(dsn, device_ids, [*definitions[:199], trip]))
        logdir = pg.spec.datadir.parent
        services = [start_service(s, dsn, rd.url, broker, logdir)
                    for s in (INGESTOR, DIAGNOSTICS, ALERTS)]
        listener = AlertListener(broker)
        try:
            sent = publish_steadily(broker, device_ids, cfg)
            time.sleep(3)  # the last events
            found = listener.latencies("bench trip")
        finally:
            listener.close()
        both = found["firing"] + found["resolved"]
        progress(f"  {sent:,} readings, {len(found['firing'])} firing and "
                 f"{len(found['resolved'])} resolved events received")
        return {"readings": sent, "values_per_reading": len(METRICS) + 1,
                "readings_per_second": round(cfg.latency_devices * cfg.latency_rate),
                "firing": len(found["firing"]), "resolved": len(found["resolved"]),
                "latency_ms": {k: round(v, 1) for k, v in latency_summary(both).items()}}
    finally:
        for service in services:
            service.stop()
        stop_and_remove(broker, rd, pg)


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    progress(f"simulating {cfg.wells} wells for {cfg.hours:g} h at {cfg.interval:g} s")
    readings = fleet(FleetBenchConfig(wells=cfg.wells, hours=cfg.hours, interval=cfg.interval,
                                      faults=cfg.wells // 5))
    values = sum(len(r.values) for r in readings)
    definitions = bench_rules(sorted({r.device_id for r in readings}))
    rules = parsed(definitions)
    progress(f"  {len(readings):,} readings, {values:,} values; {len(rules)} rules")
    progress(f"phase 1: the engine alone, {cfg.engine_runs} runs")
    runs = [measure_engine(readings, rules, cfg.interval) for _ in range(cfg.engine_runs)]
    for r in runs:
        progress(f"  {r['values_per_second']:,.0f} values/s "
                 f"({r['values_per_cpu_second']:,.0f} per CPU-second), "
                 f"{r['transitions']} transitions")
    progress("phase 2: the service draining insa:telemetry (decode, evaluate, commit, ack)")
    service = measure_service(readings, definitions, progress)
    progress(f"phase 3: reading → alert published, {cfg.latency_devices} devices at "
             f"{cfg.latency_rate:g} reading/s for {cfg.latency_seconds:g} s "
             "(ingestor, diagnostics, alerts)")
    latency = measure_latency(cfg, definitions, progress)
    return {
        "config": asdict(cfg), "readings": len(readings), "values": values,
        "rules": len(rules),
        "engine": {
            "values_per_second_median": round(statistics.median(
                r["values_per_second"] for r in runs)),
            "values_per_cpu_second_median": round(statistics.median(
                r["values_per_cpu_second"] for r in runs)),
            "runs": [round(r["values_per_second"]) for r in runs],
            "rules_per_value": round(runs[0]["rules_per_value"], 1),
            "transitions": runs[0]["transitions"]},
        "service": service, "latency": latency, "cpus": os.cpu_count(),
    }


def report(result: dict[str, Any]) -> str:
    engine, service, latency = result["engine"], result["service"], result["latency"]
    lat = latency["latency_ms"]
    return (
        f"alerts: {result['rules']} rules, {result['readings']:,} readings "
        f"({result['values']:,} values)\n"
        f"  engine alone   {engine['values_per_second_median']:,} values/s median "
        f"({engine['values_per_cpu_second_median']:,} per CPU-second; runs "
        f"{', '.join(f'{r:,}' for r in engine['runs'])}); "
        f"{engine['rules_per_value']} rules per value, {engine['transitions']} transitions\n"
        f"  service        {service['values_per_second']:,} values/s "
        f"({service['values_per_cpu_second']:,} per CPU-second of the service process), "
        f"{service['transitions']} transitions committed\n"
        f"  reading→alert  p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, "
        f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms over "
        f"{latency['firing']} firing + {latency['resolved']} resolved events "
        f"at {latency['readings_per_second']} readings/s")

