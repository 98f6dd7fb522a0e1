"""Data for `insa bench api`: a simulated fleet written straight into PostgreSQL the way
the ingestor stores it (migrations 0002, 0003; tests/utils/telemetry.py), by COPY.

Every device gets a few minutes of readings up to `end` (so each has its row per metric
in `telemetry_latest`); the first `history_devices` get `days` of readings instead. Values
come from the physical simulator (services/simulator: well, pump, instruments with their
glitches) in canonical units, as the ingestor would have stored them. On plain PostgreSQL
the hourly rollup's table (0017) fills as the COPYs run (its trigger) and the per-minute
rollup is a view over `telemetry`; on TimescaleDB the continuous aggregates are refreshed
over the loaded range.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from services.simulator.scenario_file import (
    FleetConfig,
    canonical_values,
    fleet_records,
    make_instruments,
    plan_fleet,
)
from shared.units import CANONICAL

COPY_ROWS = 100_000  # rows per COPY


@dataclass(frozen=True)
class DataConfig:
    devices: int = 5000
    history_devices: int = 5
    days: float = 30.0
    interval: float = 60.0  # s between one device's readings
    recent_minutes: float = 5.0  # readings of every other device before `end`
    seed: int = 7


@dataclass
class Loaded:
    end: datetime  # every reading is before it (a whole minute)
    device_ids: list[str]
    history_ids: list[str]
    readings: int = 0
    rows: int = 0
    latest_rows: int = 0
    simulate_seconds: float = 0.0
    copy_seconds: float = 0.0
    analyze_seconds: float = 0.0
    timescaledb: bool = False
    ids: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"devices": len(self.device_ids), "history_devices": len(self.history_ids),
                "readings": self.readings, "telemetry_rows": self.rows,
                "latest_rows": self.latest_rows, "end": self.end.isoformat(),
                "simulate_seconds": round(self.simulate_seconds, 1),
                "load_seconds": round(self.copy_seconds + self.analyze_seconds, 1),
                "copy_seconds": round(self.copy_seconds, 1),
                "analyze_seconds": round(self.analyze_seconds, 1),
                "timescaledb": self.timescaledb}


Reading = tuple[str, datetime, dict[str, float]]


def simulated(fleet: FleetConfig, skip: frozenset[str] = frozenset()) -> Iterator[Reading]:
    """Each well's readings in turn (not interleaved), canonical units."""
    plans = [p for p in plan_fleet(fleet) if p.spec.device_id not in skip]
    instruments = make_instruments(fleet, plans)
    for plan in plans:
        for r in fleet_records(fleet, [plan], instruments):
            yield r.device_id, fleet.start + timedelta(seconds=r.t), \
                canonical_values(plan.spec, r.values)


def fleets(cfg: DataConfig, end: datetime) -> tuple[FleetConfig, FleetConfig]:
    """(the whole fleet's last minutes, the history devices' days); the same wells (ids
    and seed), so a history device is the same well as in the fleet."""
    recent = FleetConfig(wells=cfg.devices, hours=cfg.recent_minutes / 60,
                         interval=cfg.interval, seed=cfg.seed, random_faults=cfg.devices // 20,
                         start=end - timedelta(minutes=cfg.recent_minutes))
    history = FleetConfig(wells=cfg.history_devices, hours=cfg.days * 24,
                          interval=cfg.interval, seed=cfg.seed,
                          random_faults=cfg.history_devices // 2,
                          setpoint_steps=cfg.history_devices, stops=cfg.history_devices,
                          start=end - timedelta(days=cfg.days))
    return recent, history


def device_row(index: int, device_id: str) -> tuple[str, str, str, str]:
    tags = [f"field-{'north' if index % 4 < 2 else 'south'}", f"pad-{index % 10}"]
    meta = {"tags": tags, "site": f"Site {index % 12 + 1:02d}"}
    return device_id, f"Well {device_id}", "esp", orjson.dumps(meta).decode()


async def catalog(conn: asyncpg.Connection, device_ids: list[str]) -> tuple[dict[str, int],
                                                                             dict[str, int]]:
    await conn.copy_records_to_table(
        "devices", records=[device_row(n, d) for n, d in enumerate(device_ids)],
        columns=["device_id", "name", "device_type", "metadata"])
    await conn.executemany("INSERT INTO metrics (name, unit) VALUES ($1, $2)",
                           list(CANONICAL.items()))
    devices = dict(await conn.fetch("SELECT device_id, id FROM devices"))
    metrics = dict(await conn.fetch("SELECT name, id FROM metrics"))
    return devices, metrics


class Writer:
    """Rows COPYed in chunks; the newest value per (device, metric) kept for
    telemetry_latest; time spent simulating and copying counted apart."""

    def __init__(self, conn: asyncpg.Connection, loaded: Loaded, metrics: dict[str, int]
                 ) -> None:
        self.conn, self.loaded, self.metrics = conn, loaded, metrics
        self.rows: list[tuple[datetime, int, int, float]] = []
        self.newest: dict[tuple[int, int], tuple[datetime, float]] = {}
        self.seen: dict[int, datetime] = {}

    async def write(self, readings: Iterator[Reading]) -> None:
        ids, loaded = self.loaded.ids, self.loaded
        started = time.perf_counter()
        for device_id, at, values in readings:
            device = ids[device_id]
            loaded.readings += 1
            self.seen[device] = at
            for name, value in values.items():
                metric = self.metrics[name]
                self.rows.append((at, device, metric, value))
                self.newest[device, metric] = (at, value)  # each well's readings in order
            if len(self.rows) >= COPY_ROWS:
                loaded.simulate_seconds += time.perf_counter() - started
                await self.flush()
                started = time.perf_counter()
        loaded.simulate_seconds += time.perf_counter() - started
        await self.flush()

    async def flush(self) -> None:
        started = time.perf_counter()
        if self.rows:
            await self.conn.copy_records_to_table("telemetry", records=self.rows,
                                                  columns=["time", "device", "metric", "value"])
            self.loaded.rows += len(self.rows)
            self.rows = []
        self.loaded.copy_seconds += time.perf_counter() - started

    async def finish(self) -> None:
        started = time.perf_counter()
        await self.conn.copy_records_to_table(
            "telemetry_latest", records=[(d, m, at, v) for (d, m), (at, v) in self.newest.items()],
            columns=["device", "metric", "time", "value"])
        self.loaded.latest_rows = len(self.newest)
        # As the ingestor leaves them: online, last seen at the newest reading.
        await self.conn.execute(
            "UPDATE devices d SET status = 'online', status_changed_at = s.at, "
            "last_seen = s.at FROM unnest($1::int[], $2::timestamptz[]) AS s(id, at) "
            "WHERE d.id = s.id", list(self.seen), list(self.seen.values()))
        self.loaded.copy_seconds += time.perf_counter() - started


async def load(dsn: str, cfg: DataConfig, progress: Callable[[str], None]) -> Loaded:
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    recent, history = fleets(cfg, end)
    device_ids = recent.device_ids()
    history_ids = history.device_ids()
    loaded = Loaded(end, device_ids, history_ids)
    conn = await asyncpg.connect(dsn)
    try:
        loaded.timescaledb = bool(await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"))
        started = time.perf_counter()
        loaded.ids, metrics = await catalog(conn, device_ids)
        loaded.copy_seconds += time.perf_counter() - started
        writer = Writer(conn, loaded, metrics)
        progress(f"  {cfg.devices:,} devices: {cfg.recent_minutes:g} min of readings each")
        await writer.write(simulated(recent, skip=frozenset(history_ids)))
        progress(f"  {cfg.history_devices} devices: {cfg.days:g} days of readings each")
        await writer.write(simulated(history))
        await writer.finish()
        started = time.perf_counter()
        if loaded.timescaledb:  # continuous aggregates: materialize what was loaded
            for view in ("telemetry_1m", "telemetry_1h"):
                await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        await conn.execute("VACUUM (ANALYZE)")  # autovacuum's job, done before measuring
        loaded.analyze_seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return loaded
