"""`insa bench api`: read latency of the API on a simulated fleet, and live clients held.

Private PostgreSQL (durable), Redis and Mosquitto; the data written straight into
PostgreSQL as the ingestor stores it (devtools/bench/api_data.py); the API as a real
process (uvicorn, one worker). Measured from this process over HTTP/1.1 keep-alive:

1. the fleet's latest values, every device in one page (`INSA_API_PAGE_MAX` is raised to
   the fleet size for the bench; its default is 1,000), and paged by 1,000;
2. 24 h of raw readings of one device: one page of 1,000, and every page of the 24 h
   (by 1,000, and by the raw readings' own page max, `INSA_API_RAW_PAGE_MAX`: one page);
3. 30 days of hourly aggregates of one device, aligned to the hour (from the rollup);
4. (measured first, on the fresh process) K server-sent-event clients on the alerts feed
   held at once; alerts added to `insa:alerts` and the time until each client has each.

Each request endpoint: sequential requests on one connection (p50/p95/p99), then
`concurrency` clients at once (requests/s, p95). CPU is the API process's own.
Figures are printed, not asserted: goals are in GOALS.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import orjson

from devtools.bench.api_data import DataConfig, Loaded, load
from devtools.bench.api_live import PREFIX, measure_live, raise_fd_limit, summary
from devtools.bench.measure import CpuSampler
from devtools.registry import API
from devtools.stack.servers import start_broker, start_postgres, start_redis, stop_and_remove
from devtools.stack.service_process import ServiceProcess, service_environment
from shared.migrate import migrate

# p95 goals (ms) of the issue; the whole 24 h of raw readings is held to the raw goal.
# A day of one device's raw readings is read as the API serves it: one page (a day at a
# reading a minute of 10 metrics is 14,400 rows, under INSA_API_RAW_PAGE_MAX); the walk
# by 1,000s is printed beside it, each page paying a request's routing and auth.
GOALS = {"fleet_latest": 100.0, "raw_24h_max_page": 100.0, "aggregate_1h": 50.0}
SSE_GOAL = 1000


@dataclass(frozen=True)
class BenchConfig:
    devices: int = 5000
    history_devices: int = 5
    days: float = 30.0
    requests: int = 200  # per endpoint and variant, unless the budget runs out first
    budget_seconds: float = 60.0  # per endpoint and variant (at least 10 requests)
    concurrency: int = 8
    page: int = 1000  # raw pages and the paged fleet (the API's default page_max)
    raw_page_max: int = 20_000  # INSA_API_RAW_PAGE_MAX (its default): a day in one page
    sse_clients: int = 1000
    alerts: int = 5  # events sent to the held clients, one at a time
    hold_seconds: float = 10.0  # idle, every client connected (CPU and RSS)

    @property
    def page_max(self) -> int:
        """INSA_API_PAGE_MAX for the bench: the whole fleet in one page."""
        return max(self.page, self.devices)

    def data(self) -> DataConfig:
        return DataConfig(devices=self.devices, history_devices=self.history_devices,
                          days=self.days)


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str  # `{device}`: each request the next history device
    params: dict[str, str | int] = field(default_factory=dict)
    walk: bool = False  # one sample follows next_cursor to the last page


def endpoints(cfg: BenchConfig, data: Loaded) -> list[Endpoint]:
    end = data.end
    hour = end.replace(minute=0)
    day = {"start": (end - timedelta(hours=24)).isoformat(), "end": end.isoformat()}
    raw = f"{PREFIX}/devices/{{device}}/telemetry"
    return [
        Endpoint("fleet_latest", f"{PREFIX}/telemetry/latest", {"limit": cfg.devices}),
        Endpoint("fleet_latest_paged", f"{PREFIX}/telemetry/latest", {"limit": cfg.page},
                 walk=True),
        Endpoint("raw_page", raw, {**day, "limit": cfg.page}),
        Endpoint("raw_24h", raw, {**day, "limit": cfg.page}, walk=True),
        Endpoint("raw_24h_max_page", raw, {**day, "limit": cfg.raw_page_max}, walk=True),
        Endpoint("aggregate_1h", f"{raw}/aggregate",
                 {"bucket": "1h", "functions": "avg,min,max",
                  "start": (hour - timedelta(days=cfg.days)).isoformat(),
                  "end": hour.isoformat()}),
    ]


class Caller:
    """Requests of one endpoint, rotating through the history devices."""

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint, devices: list[str]
                 ) -> None:
        self.client, self.endpoint, self.devices, self.calls = client, endpoint, devices, 0

    async def __call__(self) -> tuple[float, int, bytes]:
        """(ms, pages, the last page's body)."""
        path = self.endpoint.path.format(device=self.devices[self.calls % len(self.devices)])
        self.calls += 1
        params = dict(self.endpoint.params)
        pages, started = 0, time.perf_counter()
        while True:
            response = await self.client.get(path, params=params)
            pages += 1
            if response.status_code != 200:
                raise RuntimeError(f"{path} {params}: {response.status_code} "
                                   f"{response.text[:300]}")
            if not self.endpoint.walk:
                break
            cursor = orjson.loads(response.content).get("next_cursor")
            if cursor is None:
                break
            params["cursor"] = cursor
        return (time.perf_counter() - started) * 1000, pages, response.content


async def sequential(call: Caller, cfg: BenchConfig) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.monotonic() + cfg.budget_seconds
    while len(latencies) < cfg.requests and (time.monotonic() < deadline
                                             or len(latencies) < 10):
        latencies.append((await call())[0])
    return summary(latencies)


async def concurrent(call: Caller, cfg: BenchConfig) -> dict[str, Any]:
    latencies: list[float] = []
    deadline, issued = time.monotonic() + cfg.budget_seconds, 0

    async def worker() -> None:
        nonlocal issued
        while issued < cfg.requests and (time.monotonic() < deadline or issued < 10):
            issued += 1
            latencies.append((await call())[0])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
    elapsed = time.perf_counter() - started
    return {**summary(latencies), "clients": cfg.concurrency,
            "requests_per_second": round(len(latencies) / elapsed, 1)}


def describe(name: str, body: bytes, pages: int) -> dict[str, Any]:
    """What one answer held (checks that the bench measures what it says)."""
    data = orjson.loads(body)
    if name.startswith("aggregate"):
        return {"source": data["source"], "buckets": sum(len(s) for s in data["series"].values()),
                "metrics": len(data["series"])}
    return {"pages": pages, "items_last_page": len(data["items"]), "bytes_last_page": len(body)}


async def measure_requests(port: int, token: str, cfg: BenchConfig, data: Loaded, pid: int,
                           progress: Callable[[str], None]) -> dict[str, Any]:
    cpu = CpuSampler(pid)
    limits = httpx.Limits(max_connections=cfg.concurrency,
                          max_keepalive_connections=cfg.concurrency)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        for endpoint in endpoints(cfg, data):
            call = Caller(client, endpoint, data.history_ids)
            for _ in range(3):  # warm-up: connection, plans, caches
                _, pages, body = await call()
            before = cpu.seconds()
            seq = await sequential(call, cfg)
            seq_cpu = cpu.seconds() - before
            before = cpu.seconds()
            conc = await concurrent(call, cfg)
            results[endpoint.name] = {
                **describe(endpoint.name, body, pages), "sequential": seq, "concurrent": conc,
                "cpu_ms_per_request": round(seq_cpu * 1000 / seq["n"], 1),
                "cpu_seconds": round(seq_cpu + cpu.seconds() - before, 2)}
            progress(f"  {endpoint.name}: p50 {seq['p50']:.1f} ms, p95 {seq['p95']:.1f} ms "
                     f"({seq['n']}); {conc['clients']} clients {conc['requests_per_second']}/s")
    return results


# --- the run ---------------------------------------------------------------------------------
def login(port: int, password: str) -> str:
    response = httpx.post(f"http://127.0.0.1:{port}{PREFIX}/auth/login",
                          json={"username": "admin", "password": password}, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


@contextmanager
def served_api(data_cfg: DataConfig, api_env: dict[str, str],
               progress: Callable[[str], None]) -> Iterator[tuple[ServiceProcess, str, Loaded]]:
    """Private servers, the fleet loaded, and the API running on them as a process: (the
    process, the admin's password, what was loaded). Everything is removed afterwards."""
    pg, rd, broker = start_postgres(durable=True), start_redis(), start_broker()
    service: ServiceProcess | None = None
    try:
        dsn = pg.spec.dsn()
        asyncio.run(migrate(dsn))
        progress(f"loading: {data_cfg.devices:,} devices, {data_cfg.history_devices} of them "
                 f"with {data_cfg.days:g} days of readings at 60 s")
        data = asyncio.run(load(dsn, data_cfg, progress))
        loaded = data.summary()
        progress(f"  {loaded['telemetry_rows']:,} rows: simulated in "
                 f"{loaded['simulate_seconds']} s, loaded in {loaded['load_seconds']} s")
        password = secrets.token_urlsafe(24)
        env = service_environment(API, dsn, rd.url, broker, INSA_ENV="production",
                                  INSA_LOG_LEVEL="WARNING",
                                  INSA_API_JWT_SECRET=secrets.token_hex(32),
                                  INSA_API_ADMIN_PASSWORD=password, **api_env)
        service = ServiceProcess(API, env, pg.spec.datadir.parent / "api.log")
        service.start()
        yield service, password, data
    finally:
        if service is not None:
            service.stop()
        stop_and_remove(broker, rd, pg)


def run(cfg: BenchConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    began = time.monotonic()
    fd_limit = raise_fd_limit(cfg.sse_clients)
    # The live phase opens every SSE client with one token: the bench's one caller stands
    # in for many (a user or key each), so the per-caller cap is raised to all of them.
    api_env = {"INSA_API_PAGE_MAX": str(cfg.page_max),
               "INSA_API_RAW_PAGE_MAX": str(cfg.raw_page_max),
               "INSA_API_ACCESS_TOKEN_SECONDS": "86400",
               "INSA_API_LIVE_MAX_PER_PRINCIPAL": str(cfg.sse_clients)}
    with served_api(cfg.data(), api_env, progress) as (service, password, data):
        assert service.proc is not None
        token = login(service.http_port, password)
        # Live clients first, on a fresh process: its RSS before them is not yet grown by
        # the large responses below.
        progress(f"live: {cfg.sse_clients} SSE clients on the alerts feed")
        live = asyncio.run(measure_live(service.http_port, token, service.env["INSA_REDIS_URL"],
                                        service.proc.pid, cfg.sse_clients, cfg.alerts,
                                        cfg.hold_seconds, progress))
        progress(f"requests: up to {cfg.requests} sequential, then {cfg.concurrency} "
                 f"clients, per endpoint")
        requests = asyncio.run(measure_requests(service.http_port, token, cfg, data,
                                                service.proc.pid, progress))
        return {"config": asdict(cfg), "data": data.summary(), "api_env": api_env,
                "endpoints": requests, "live": live, "goals_p95_ms": GOALS,
                "sse_goal": SSE_GOAL, "fd_limit": fd_limit, "cpus": os.cpu_count(),
                "seconds": round(time.monotonic() - began, 1)}


def report(result: dict[str, Any]) -> str:
    data, eps, live = result["data"], result["endpoints"], result["live"]
    lines = [f"api: {data['devices']:,} devices, {data['history_devices']} with "
             f"{result['config']['days']:g} days; {data['telemetry_rows']:,} telemetry rows "
             f"(simulated {data['simulate_seconds']} s, loaded {data['load_seconds']} s: COPY "
             f"{data['copy_seconds']} s, VACUUM ANALYZE {data['analyze_seconds']} s; "
             f"{'TimescaleDB' if data['timescaledb'] else 'plain PostgreSQL'}); "
             f"INSA_API_PAGE_MAX={result['api_env']['INSA_API_PAGE_MAX']}, "
             f"INSA_API_RAW_PAGE_MAX={result['api_env']['INSA_API_RAW_PAGE_MAX']}"]
    for name, ep in eps.items():
        seq, conc = ep["sequential"], ep["concurrent"]
        what = f"source {ep['source']}, {ep['buckets']:,} buckets" if "source" in ep else \
            f"{ep['pages']} page(s), last {ep['items_last_page']:,} items"
        goal = GOALS.get(name)
        verdict = "" if goal is None else \
            f"  [goal p95 ≤ {goal:g} ms: {'met' if seq['p95'] <= goal else 'NOT met'}]"
        lines.append(
            f"  {name:<18} p50 {seq['p50']:7.1f}  p95 {seq['p95']:7.1f}  p99 {seq['p99']:7.1f} "
            f"ms ({seq['n']} seq; {what}; {ep['cpu_ms_per_request']} ms API CPU each); "
            f"{conc['clients']} clients: {conc['requests_per_second']}/s, p95 "
            f"{conc['p95']:.1f} ms{verdict}")
    d = live["delivery_ms"]
    lines.append(
        f"  live SSE           {live['held']:,} of {live['clients']:,} clients held "
        f"({live['refused']} refused) [goal {result['sse_goal']:,}: "
        f"{'met' if live['held'] >= result['sse_goal'] else 'NOT met'}]; opened in "
        f"{live['open_seconds']} s (to ready p95 {live['to_ready_ms']['p95']:.0f} ms); API RSS "
        f"{live['rss_mb_before']} → {live['rss_mb_held']} MB, idle CPU "
        f"{live['idle_cpu_seconds_per_second']:.0%}\n"
        f"                     alert → every client: p50 {d['p50']:.0f}, p95 {d['p95']:.0f}, "
        f"max {d['max']:.0f} ms ({live['alerts_received']:,} of "
        f"{live['alerts_expected']:,} received; last client per alert "
        f"{', '.join(f'{v:.0f}' for v in live['all_clients_ms'])} ms; "
        f"{live['delivery_cpu_seconds']} s API CPU for {live['alerts_sent']} alerts)")
    lines.append(f"  run took {result['seconds']:.0f} s on {result['cpus']} CPUs")
    return "\n".join(lines)
