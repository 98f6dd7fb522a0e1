"""`insa bench diagnose`: how many readings one diagnostics process judges per second.

Two measurements on the same simulated fleet (services/simulator: physical wells,
some faulty, setpoint steps and stops):

1. engine: the pure engine in this process, readings already in canonical units;
2. service: the diagnostics service on private PostgreSQL and Redis (and Mosquitto for
   its publisher), draining an `insa:telemetry` stream filled beforehand: decode,
   judge, commit with progress, acknowledge. CPU is the service process's own.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from devtools.bench.measure import CpuSampler
from devtools.registry import DIAGNOSTICS
from devtools.stack.servers import start_broker, start_postgres, start_redis, stop_and_remove
from devtools.stack.service_process import ServiceProcess, service_environment
from services.simulator.scenario_file import (
    FleetConfig,
    canonical_values,
    fleet_records,
    make_instruments,
    plan_fleet,
)
from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.events import Reading
from shared.migrate import migrate
from shared.streams import TELEMETRY, TelemetryWriter, encode_telemetry


@dataclass(frozen=True)
class BenchConfig:
    wells: int = 100
    hours: float = 12.0
    interval: float = 60.0
    faults: int = 20
    engine_runs: int = 3


def fleet(cfg: BenchConfig) -> list[Reading]:
    fleet_cfg = FleetConfig(wells=cfg.wells, hours=cfg.hours, interval=cfg.interval, seed=7,
                            random_faults=cfg.faults, setpoint_steps=cfg.wells // 2,
                            stops=cfg.wells // 4)
    plans = plan_fleet(fleet_cfg)
    specs = {p.spec.device_id: p.spec for p in plans}
    start = fleet_cfg.start.timestamp()
    return [Reading(r.device_id, start + r.t, canonical_values(specs[r.device_id], r.values))
            for r in fleet_records(fleet_cfg, plans, make_instruments(fleet_cfg, plans))]


def measure_engine(readings: list[Reading]) -> tuple[float, float]:
    """(readings per second, readings per CPU-second) of one pass of a fresh engine."""
    engine = DiagnosisEngine()
    cpu, wall = time.process_time(), time.perf_counter()
    for reading in readings:
        engine.process(reading)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(readings) / wall, len(readings) / cpu


async def fill_stream(redis_url: str, dsn: str, readings: list[Reading]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO devices (device_id) SELECT unnest($1::text[])",
                           sorted({r.device_id for r in readings}))
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url)
    writer = TelemetryWriter(client, TELEMETRY)
    for start in range(0, len(readings), 2000):
        await writer.add([encode_telemetry(r.device_id, int(r.ts * 1000), dict(r.values), None)
                          for r in readings[start:start + 2000]])
    await client.aclose()


async def judged(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM diagnostics_progress"))
    finally:
        await conn.close()


def measure_service(readings: list[Reading], progress: Callable[[str], None]
                    ) -> dict[str, Any]:
    pg, rd, broker = start_postgres(durable=True), start_redis(), start_broker()
    service: ServiceProcess | None = None
    try:
        dsn = pg.spec.dsn()
        asyncio.run(migrate(dsn))
        asyncio.run(fill_stream(rd.url, dsn, readings))
        last = {r.device_id: r.ts for r in readings}
        env = service_environment(DIAGNOSTICS, dsn, rd.url, broker, INSA_ENV="production",
                                  INSA_LOG_LEVEL="WARNING")
        service = ServiceProcess(DIAGNOSTICS, env, pg.spec.datadir.parent / "diagnostics.log")
        service.start()
        assert service.proc is not None
        cpu = CpuSampler(service.proc.pid)
        cpu_before, started = cpu.seconds(), time.monotonic()
        while service.metric("insa_diagnostics_readings_total") < len(readings):
            if time.monotonic() - started > 900:
                raise RuntimeError(f"diagnostics did not finish:\n{service.log()}")
            time.sleep(0.05)
        elapsed, cpu_used = time.monotonic() - started, cpu.seconds() - cpu_before
        wells = asyncio.run(judged(dsn))
        assert wells == len(last), f"{wells} wells judged of {len(last)}"
        events = service.metric("insa_diagnostics_diagnoses_total")
        progress(f"  {len(readings) / elapsed:,.0f} readings/s, {events:.0f} diagnosis events")
        return {"readings_per_second": round(len(readings) / elapsed),
                "readings_per_cpu_second": round(len(readings) / cpu_used),
                "seconds": round(elapsed, 2), "cpu_seconds": round(cpu_used, 2),
                "diagnosis_events": int(events)}
    finally:
        if service is not None:
            service.stop()
        stop_and_remove(broker, rd, pg)


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    progress(f"simulating {cfg.wells} wells for {cfg.hours:g} h at {cfg.interval:g} s "
             f"({cfg.faults} faulty, setpoint steps and stops)")
    readings = fleet(cfg)
    metrics = statistics.fmean(len(r.values) for r in readings)
    progress(f"  {len(readings):,} readings, {metrics:.1f} metrics each on average")
    progress(f"phase 1: the engine alone, {cfg.engine_runs} runs")
    runs = [measure_engine(readings) for _ in range(cfg.engine_runs)]
    for rate, per_cpu in runs:
        progress(f"  {rate:,.0f} readings/s ({per_cpu:,.0f} per CPU-second)")
    progress("phase 2: the service draining insa:telemetry (decode, judge, commit, ack)")
    service = measure_service(readings, progress)
    return {
        "config": cfg.__dict__, "readings": len(readings), "metrics_per_reading": round(metrics, 2),
        "engine": {"readings_per_second_median": round(statistics.median(r for r, _ in runs)),
                   "readings_per_cpu_second_median": round(statistics.median(c for _, c in runs)),
                   "runs": [round(r) for r, _ in runs]},
        "service": service, "cpus": os.cpu_count(),
    }


def report(result: dict[str, Any]) -> str:
    engine, service = result["engine"], result["service"]
    return (
        f"diagnose: {result['readings']:,} readings of {result['metrics_per_reading']} "
        f"metrics on average\n"
        f"  engine alone   {engine['readings_per_second_median']:,} readings/s median "
        f"({engine['readings_per_cpu_second_median']:,} per CPU-second; runs "
        f"{', '.join(f'{r:,}' for r in engine['runs'])})\n"
        f"  service        {service['readings_per_second']:,} readings/s "
        f"({service['readings_per_cpu_second']:,} per CPU-second of the service process), "
        f"{service['diagnosis_events']} events")
