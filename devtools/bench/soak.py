"""`insa bench soak`: the whole platform for a long while under load and chaos.

Private PostgreSQL, Redis and Mosquitto; the ingestor, diagnostics, alerts and the API
as processes that this harness supervises as supervisord would (started again when they
exit); a fleet of simulated wells, some developing faults, publishing at QoS 1; the
built-in rules loaded. At random intervals one reliability event: Redis, PostgreSQL or
the broker restarted (down for a few seconds), or kill -9 of one service. At the end,
once the pipeline has caught up, it checks what an operator relies on:

- no service exited on its own (only the kills this harness made);
- every reading the broker acknowledged is stored, once;
- every alert raised once (one open alert per rule and device at any time, one firing
  event per alert), every alert event published, and how many reached the subscriber
  more than once; no diagnosis event written twice;
- each service's memory after warm-up (RSS at the end against after two minutes of its
  longest life).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.bench.api_live import rss_mb
from devtools.bench.soak_checks import caught_up, check_data, problems
from devtools.bench.soak_wells import Fleet, follow_alerts, quiet_mqtt_futures, run_well
from devtools.registry import ALERTS, API, DIAGNOSTICS, INGESTOR
from devtools.stack.servers import (
    RunningBroker,
    RunningPostgres,
    RunningRedis,
    start_broker,
    start_postgres,
    start_redis,
    stop_and_remove,
)
from devtools.stack.service_process import ServiceProcess, service_environment
from services.simulator.faults import FAULT_KINDS
from services.simulator.instruments import NO_GLITCHES
from services.simulator.main import Device, SimulatorConfig
from shared import db
from shared.alerting.defaults import load_defaults
from shared.alerting.rules import parse_rule, stored_form
from shared.migrate import migrate

EVENTS = ("redis", "postgres", "broker", "kill ingestor", "kill diagnostics", "kill alerts",
          "kill api")
WARM_UP_SECONDS = 120.0
RSS_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 30.0
    wells: int = 100
    interval: float = 0.4           # seconds between one well's readings (250 readings/s)
    faults: int = 10                # wells that develop a fault (onset after 2 min)
    event_every: tuple[float, float] = (30.0, 90.0)  # seconds between reliability events
    outage: tuple[float, float] = (3.0, 15.0)        # how long a server stays down
    events: tuple[str, ...] = EVENTS  # in this order first, then at random
    settle_seconds: float = 180.0   # how long the pipeline may take to catch up at the end
    seed: int = 0


@dataclass
class Lifetime:
    service: str
    pid: int
    started: float
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds alive, MB)
    ended: str | None = None  # "killed" (by the soak), "exited <code>" (on its own)


class Supervisor:
    """Runs each service as supervisord would: started again, after a second, whenever it
    exits. Exits that the soak did not cause are counted as unexpected."""

    def __init__(self, envs: dict[str, dict[str, str]], logdir: Path) -> None:
        self.envs, self.logdir = envs, logdir
        self.procs: dict[str, ServiceProcess] = {}
        self.lives: list[Lifetime] = []
        self.unexpected: list[str] = []
        self._killed: set[int] = set()

    def start(self, name: str) -> None:
        service = {s.name: s for s in (INGESTOR, DIAGNOSTICS, ALERTS, API)}[name]
        proc = ServiceProcess(service, self.envs[name], self.logdir / f"{name}.log")
        proc.start(wait_ready=False)
        assert proc.proc is not None
        self.procs[name] = proc
        self.lives.append(Lifetime(name, proc.proc.pid, time.monotonic()))

    def kill(self, name: str) -> None:
        proc = self.procs[name].proc
        assert proc is not None
        self._killed.add(proc.pid)
        proc.send_signal(signal.SIGKILL)

    async def watch(self, stop: asyncio.Event) -> None:
        next_rss = 0.0
        while not stop.is_set():
            now = time.monotonic()
            for name, service in list(self.procs.items()):
                assert service.proc is not None
                code = service.proc.poll()
                if code is None:
                    continue
                life = next(x for x in reversed(self.lives) if x.pid == service.proc.pid)
                if service.proc.pid in self._killed:
                    life.ended = "killed"
                else:
                    life.ended = f"exited {code}"
                    self.unexpected.append(f"{name} exited with {code}:\n{service.log()[-1500:]}")
                await asyncio.sleep(1.0)
                self.start(name)
            if now >= next_rss:
                next_rss = now + RSS_EVERY_SECONDS
                for life in self.lives:
                    if life.ended is None:
                        try:
                            life.rss.append((now - life.started, rss_mb(life.pid)))
                        except OSError:
                            pass
            await asyncio.sleep(0.2)

    def stop_all(self) -> None:
        for service in self.procs.values():
            service.stop()

    def memory(self) -> dict[str, dict[str, float]]:
        """Per service, its longest life: RSS after warm-up and at its end."""
        out: dict[str, dict[str, float]] = {}
        for name in self.procs:
            lives = [x for x in self.lives if x.service == name and x.rss]
            life = max(lives, key=lambda x: x.rss[-1][0], default=None)
            if life is None or life.rss[-1][0] < 2 * WARM_UP_SECONDS:
                continue
            warm = next(mb for alive, mb in life.rss if alive >= WARM_UP_SECONDS)
            end = life.rss[-1][1]
            out[name] = {"minutes_alive": round(life.rss[-1][0] / 60, 1),
                         "rss_after_warm_up_mb": warm, "rss_at_end_mb": end,
                         "growth_mb": round(end - warm, 1),
                         "growth_percent": round(100 * (end - warm) / warm, 1)}
        return out


# --- chaos --------------------------------------------------------------------------------
async def reliability_event(event: str, servers: dict[str, Any], supervisor: Supervisor,
                            outage: float) -> None:
    if event.startswith("kill "):
        supervisor.kill(event.removeprefix("kill "))
        return
    server = servers[event]
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(outage)
    await asyncio.to_thread(server.start)


async def chaos(cfg: SoakConfig, servers: dict[str, Any], supervisor: Supervisor,
                until: float, log: list[dict[str, Any]], progress: Callable[[str], None]
                ) -> None:
    rng = random.Random(cfg.seed)
    planned = list(cfg.events)
    started = time.monotonic()
    while True:
        wait = rng.uniform(*cfg.event_every)
        if time.monotonic() + wait >= until:
            return
        await asyncio.sleep(wait)
        event = planned.pop(0) if planned else rng.choice(EVENTS)
        outage = round(rng.uniform(*cfg.outage), 1)
        progress(f"  {(time.monotonic() - started) / 60:5.1f} min: {event}"
                 + ("" if event.startswith("kill") else f" (down {outage} s)"))
        log.append({"at_s": round(time.monotonic() - started), "event": event,
                    "outage_s": None if event.startswith("kill") else outage})
        await reliability_event(event, servers, supervisor, outage)


# --- the run ---------------------------------------------------------------------------------
def plan_faults(cfg: SoakConfig, device_ids: list[str]) -> dict[str, str]:
    rng = random.Random(cfg.seed)
    kinds = sorted(FAULT_KINDS)
    chosen = rng.sample(device_ids, min(cfg.faults, len(device_ids)))
    return {d: kinds[n % len(kinds)] for n, d in enumerate(sorted(chosen))}


async def soak(cfg: SoakConfig, pg: RunningPostgres, rd: RunningRedis, broker: RunningBroker,
               device_ids: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    asyncio.get_running_loop().set_exception_handler(quiet_mqtt_futures)
    dsn = pg.spec.dsn()
    await migrate(dsn)
    conn = await db.connect(dsn)  # with the JSON codecs the rules need
    try:
        await load_defaults(conn)
        # One alert per running well, whatever the defaults make of the fleet: raised
        # once, and never again across the restarts and kills.
        rule = parse_rule({"type": "threshold", "name": "soak: well running",
                           "metric": "motor_current", "op": ">", "value": 0.0})
        await conn.execute("INSERT INTO rules (name, definition) VALUES ($1, $2)",
                           rule.name, stored_form(rule))
    finally:
        await conn.close()
    logdir = pg.spec.datadir.parent
    envs = {s.name: service_environment(
        s, dsn, rd.url, broker, INSA_ENV="production", INSA_LOG_LEVEL="INFO",
        **({"INSA_API_JWT_SECRET": "soak-" + "k" * 60,
            "INSA_API_ADMIN_PASSWORD": "soak-admin-password"} if s is API else {}))
        for s in (INGESTOR, DIAGNOSTICS, ALERTS, API)}
    supervisor = Supervisor(envs, logdir)
    for name in envs:
        supervisor.start(name)
    for proc in supervisor.procs.values():  # the ingestor's session exists before any reading
        await asyncio.to_thread(proc.wait_ready, 60)
    scenarios = plan_faults(cfg, device_ids)
    sim = SimulatorConfig("127.0.0.1", broker.port, {}, cfg.interval, scenarios, seed=cfg.seed)
    devices = {d: Device(sim, d) for d in device_ids}
    for device in devices.values():  # readings stay valid: this soak is about delivery
        device.instruments.glitches = NO_GLITCHES
    fleet, received, events = Fleet(), list[int](), list[dict[str, Any]]()
    stop, done = asyncio.Event(), asyncio.Event()
    started = time.monotonic()
    until = started + cfg.minutes * 60
    progress(f"soak: {cfg.wells} wells every {cfg.interval:g} s "
             f"({cfg.wells / cfg.interval:.0f} readings/s), {len(scenarios)} faults, "
             f"{cfg.minutes:g} min")
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.watch(done))
            subscriber = group.create_task(follow_alerts(
                broker.port, broker.credentials["insa-subscriber"], received))
            wells = [group.create_task(run_well(devices[d], d, broker.credentials[d], broker.port,
                                                cfg.interval, fleet, stop)) for d in device_ids]
            await chaos(cfg, {"redis": rd, "postgres": pg, "broker": broker}, supervisor, until,
                        events, progress)
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            stop.set()
            _, stuck = await asyncio.wait(wells, timeout=30)
            for well in stuck:  # a client still waiting on a dead connection
                well.cancel()
            progress("  publishing stopped; waiting for the pipeline to catch up")
            settle = await caught_up(dsn, rd.url, cfg.settle_seconds)
            if settle["seconds"] is None:
                progress(f"  not caught up after {cfg.settle_seconds:g} s: {settle['still_busy']}")
            await asyncio.sleep(3)  # the subscriber's last messages
            subscriber.cancel()
            done.set()
        data = await check_data(dsn, fleet, received)
    finally:  # whatever happened, no service outlives the soak
        supervisor.stop_all()
    faulty = {(d, code) for d, code in scenarios.items()}
    result = {"config": asdict(cfg), "events": events,
              "unexpected_exits": supervisor.unexpected,
              "kills": sum(1 for x in supervisor.lives if x.ended == "killed"),
              "settle": settle, "memory": supervisor.memory(),
              "faults": sorted(scenarios.items()),
              "faults_diagnosed": len(faulty & set(map(tuple, data["diagnosed"]))),
              "data": data}
    data["diagnosed"] = len(data["diagnosed"])
    result["problems"] = problems(result)
    return result


def run(cfg: SoakConfig, progress: Callable[[str], None] = print,
        keep_logs: Path | None = None) -> dict[str, Any]:
    device_ids = [f"soak-{n:03d}" for n in range(cfg.wells)]
    pg, rd = start_postgres(durable=True), start_redis()
    broker = start_broker(devices=device_ids)
    try:
        return asyncio.run(soak(cfg, pg, rd, broker, device_ids, progress))
    finally:
        if keep_logs is not None:  # the services' logs, before their directory goes
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in pg.spec.datadir.parent.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
            shutil.copy(broker.spec.rundir / "mosquitto.log", keep_logs / "mosquitto.log")
        stop_and_remove(broker, rd, pg)
