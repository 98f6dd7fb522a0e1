"""`insa bench console`: the operator console's server time on a 5,000-well fleet.

The fleet of `insa bench api` (devtools/bench/api_data.py: every well with its latest
values, a few with 30 days of readings at one a minute), plus open issues on one well in
twenty (a firing alert, an open diagnosis), served by the API as a real process. Logged
in through the console's form as a browser is, this process measures over HTTP/1.1
keep-alive on the same machine, sequentially (p50/p95/p99) with the API's CPU per request:

1. the fleet page (first page, a filtered one, a search) and its live refresh;
2. a well's page and its trend data over 30 days (the JSON of three charts, 1,200 px
   wide);
3. the first load's weight: the fleet page and every script and style it references.

Figures are printed, not asserted: goals are in GOALS.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import httpx

from devtools.bench.api import served_api
from devtools.bench.api_data import DataConfig, Loaded
from devtools.bench.api_live import summary
from devtools.bench.measure import CpuSampler

GOALS = {"fleet_page": 150.0, "well_series_30d": 100.0}
WEIGHT_GOAL_KB = 300
ASSET = re.compile(r"""(?:src|href)="(/static/[^"]+)\"""")
CHART_METRICS = ("motor_current", "pip", "flow_rate")  # three charts, as the page opens
ISSUE_SHARE = 20  # one well in twenty has an open alert and an open diagnosis


@dataclass(frozen=True)
class BenchConfig:
    devices: int = 5000
    history_devices: int = 5
    days: float = 30.0
    requests: int = 200  # per page, unless the budget runs out first
    budget_seconds: float = 30.0  # per page (at least 10 requests)
    chart_width: int = 1200  # px the trend is drawn on

    def data(self) -> DataConfig:
        return DataConfig(devices=self.devices, history_devices=self.history_devices,
                          days=self.days)


async def open_issues(dsn: str, data: Loaded) -> int:
    """A firing alert and an open warning diagnosis on every ISSUE_SHARE-th well."""
    chosen = data.device_ids[::ISSUE_SHARE]
    conn = await asyncpg.connect(dsn)
    try:
        rule = await conn.fetchval(
            "INSERT INTO rules (name, definition) VALUES ('bench: motor current high', "
            "'{}'::jsonb) RETURNING id")
        await conn.executemany(
            "INSERT INTO alerts (rule_id, device_id, state, severity, message, active_since, "
            "fire_at, fired_at) VALUES ($1, $2, 'firing', 'critical', 'motor current high', "
            "$3, $3, $3)", [(rule, d, data.end) for d in chosen])
        await conn.executemany(
            "INSERT INTO open_diagnoses (device_id, code, severity, confidence, since, "
            "diagnosis_id) VALUES ($1, 'underload', 'warning', 0.8, $2, 0)",
            [(d, data.end) for d in chosen])
    finally:
        await conn.close()
    return len(chosen)


def pages(cfg: BenchConfig, data: Loaded) -> dict[str, Callable[[int], str]]:
    """Each page's path for the n-th request (wells and searches rotate)."""
    wells = data.history_ids
    return {
        "fleet_page": lambda n: "/console/",
        "fleet_page_filtered": lambda n: "/console/?status=online&severity=any",
        "fleet_page_search": lambda n: f"/console/?q={n % 100:02d}",
        "fleet_rows_refresh": lambda n: "/console/fleet/rows",
        "well_page": lambda n: f"/console/wells/{wells[n % len(wells)]}",
        "well_series_30d": lambda n: (
            f"/console/wells/{wells[n % len(wells)]}/series?range=30d"
            f"&metrics={','.join(CHART_METRICS)}&width={cfg.chart_width}"),
    }


async def measure(port: int, password: str, cfg: BenchConfig, data: Loaded, pid: int,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    cpu = CpuSampler(pid)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        login = await client.post("/console/login", data={"username": "admin",
                                                          "password": password})
        if login.status_code != 303:
            raise RuntimeError(f"console login: {login.status_code} {login.text[:300]}")
        results["first_load"] = await first_load(client)
        for name, path in pages(cfg, data).items():
            for n in range(3):  # warm-up: connection, plans, caches
                await fetch(client, path(n))
            latencies: list[float] = []
            before, deadline = cpu.seconds(), time.monotonic() + cfg.budget_seconds
            while len(latencies) < cfg.requests and (time.monotonic() < deadline
                                                     or len(latencies) < 10):
                started = time.perf_counter()
                body = await fetch(client, path(len(latencies)))
                latencies.append((time.perf_counter() - started) * 1000)
            seq = summary(latencies)
            results[name] = {"sequential": seq, "bytes": len(body),
                             "cpu_ms_per_request": round(
                                 (cpu.seconds() - before) * 1000 / seq["n"], 1)}
            progress(f"  {name}: p50 {seq['p50']:.1f} ms, p95 {seq['p95']:.1f} ms "
                     f"({seq['n']}), {len(body):,} bytes")
    return results


async def fetch(client: httpx.AsyncClient, path: str) -> bytes:
    response = await client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return response.content


async def first_load(client: httpx.AsyncClient) -> dict[str, Any]:
    """Bytes of the fleet page and of each asset it references (none is compressed)."""
    page = await fetch(client, "/console/")
    assets = {path: len(await fetch(client, path))
              for path in sorted(set(ASSET.findall(page.decode())))}
    return {"page_bytes": len(page), "assets": assets,
            "total_kb": round((len(page) + sum(assets.values())) / 1024, 1)}


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    began = time.monotonic()
    with served_api(cfg.data(), {}, progress) as (service, password, data):
        assert service.proc is not None
        issues = asyncio.run(open_issues(service.env["INSA_DATABASE_URL"], data))
        progress(f"console: {issues} wells with open issues; up to {cfg.requests} "
                 f"sequential requests per page")
        results = asyncio.run(measure(service.http_port, password, cfg, data,
                                      service.proc.pid, progress))
        return {"config": asdict(cfg), "data": data.summary(), "wells_with_issues": issues,
                "pages": results, "goals_p95_ms": GOALS, "weight_goal_kb": WEIGHT_GOAL_KB,
                "cpus": os.cpu_count(), "seconds": round(time.monotonic() - began, 1)}


def report(result: dict[str, Any]) -> str:
    data, found = result["data"], result["pages"]
    weight = found.pop("first_load")
    lines = [f"console: {data['devices']:,} wells ({result['wells_with_issues']} with open "
             f"issues), {data['history_devices']} with {result['config']['days']:g} days; "
             f"{data['telemetry_rows']:,} telemetry rows; "
             f"{'TimescaleDB' if data['timescaledb'] else 'plain PostgreSQL'}"]
    for name, page in found.items():
        seq, goal = page["sequential"], GOALS.get(name)
        verdict = "" if goal is None else \
            f"  [goal p95 ≤ {goal:g} ms: {'met' if seq['p95'] <= goal else 'NOT met'}]"
        lines.append(f"  {name:<20} p50 {seq['p50']:7.1f}  p95 {seq['p95']:7.1f}  p99 "
                     f"{seq['p99']:7.1f} ms ({seq['n']} seq; {page['bytes']:,} bytes; "
                     f"{page['cpu_ms_per_request']} ms API CPU each){verdict}")
    kb = weight["total_kb"]
    lines.append(f"  first load of the fleet page: {kb} KB (page {weight['page_bytes']:,} B; "
                 + ", ".join(f"{p.rsplit('/', 1)[-1]} {b:,} B"
                             for p, b in weight["assets"].items())
                 + f") [goal ≤ {WEIGHT_GOAL_KB} KB: "
                 f"{'met' if kb <= WEIGHT_GOAL_KB else 'NOT met'}]")
    lines.append(f"  run took {result['seconds']:.0f} s on {result['cpus']} CPUs")
    return "\n".join(lines)
