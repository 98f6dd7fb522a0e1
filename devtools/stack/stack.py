"""`insa stack up|down|status`: the whole platform on this machine, without Docker.

supervisord (a well-kept process supervisor) runs PostgreSQL, Redis, Mosquitto
and every service from a config generated into the git-ignored run directory;
`down` shuts supervisord down, which stops exactly the processes it started.
Secrets are generated once into the run directory and never leave it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.registry import API, INGESTOR, SERVICES, Service
from devtools.stack.broker import REPO_ROOT, BrokerSpec, prepare_broker
from devtools.stack.processes import (
    DevstackError,
    PostgresSpec,
    RedisSpec,
    hand_over,
    init_postgres,
    port_open,
    unprivileged_user,
    wait_for_port,
    wait_for_postgres,
)
from shared.broker_accounts import SERVICE_ACCOUNTS, SPARKPLUG_ACCOUNT
from shared.mqtt import ALERTS_FILTER, DIAGNOSTICS_FILTER

START_RETRIES = 1_000_000
# Keys of secrets.env: the API's token signing key and its first admin's password.
API_JWT_SECRET, API_ADMIN_PASSWORD = "api-jwt-secret", "api-admin-password"

# The simulated fleet: device number -> injected fault; the others are healthy wells.
# Faults begin after five minutes of healthy baseline (the engine learns each well from
# its first readings) and develop over ten, so a newcomer sees diagnoses within minutes.
SIMULATOR_SCENARIOS = {2: "gas_lock", 3: "bearing_wear", 5: "overload", 6: "closed_valve",
                       8: "pump_off", 9: "overheating"}
SIMULATOR_FAULT_ONSET_S = 300
SPARKPLUG_HOST_ID = "insa"  # the local stack's Sparkplug B primary host
SIMULATOR_FAULT_RAMP_S = 600


@dataclass(frozen=True)
class StackConfig:
    rundir: Path
    pg_port: int
    redis_port: int
    mqtt_port: int
    mqtts_port: int
    http_ports: dict[str, int]  # service name -> its health/metrics port
    simulator_devices: int

    @classmethod
    def from_env(cls) -> StackConfig:
        env = os.environ.get
        return cls(
            rundir=Path(env("INSA_STACK_DIR", str(REPO_ROOT / ".run"))).resolve(),
            pg_port=int(env("INSA_STACK_PG_PORT", "15432")),
            redis_port=int(env("INSA_STACK_REDIS_PORT", "16379")),
            mqtt_port=int(env("INSA_STACK_MQTT_PORT", "11883")),
            mqtts_port=int(env("INSA_STACK_MQTTS_PORT", "18883")),
            http_ports={s.name: int(env(f"INSA_STACK_{s.name.upper()}_HTTP_PORT",
                                        str(s.stack_http_port))) for s in SERVICES},
            simulator_devices=int(env("INSA_STACK_SIM_DEVICES", "10")),
        )

    @property
    def supervisor_conf(self) -> Path:
        return self.rundir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.rundir / "supervisord.pid"


def load_secrets(rundir: Path, device_ids: list[str]) -> dict[str, str]:
    """Random secrets made on first `up` and kept in the run directory (mode 0600)."""
    path = rundir / "secrets.env"
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            known[key] = value
    wanted = ["postgres", "redis", API_JWT_SECRET, API_ADMIN_PASSWORD, *SERVICE_ACCOUNTS,
              *device_ids]
    for key in wanted:
        known.setdefault(key, secrets.token_urlsafe(48 if key == API_JWT_SECRET else 18))
    write_private(path, "".join(f"{k}={v}\n" for k, v in known.items()))
    # The simulator's devices read theirs from a file of their own: nothing else.
    write_private(rundir / "devices.env", "".join(f"{k}={known[k]}\n" for k in device_ids))
    return known


def simulator_device_ids(cfg: StackConfig) -> list[str]:
    return [f"sim-esp-{n:03d}" for n in range(1, cfg.simulator_devices + 1)]


def simulator_argv(cfg: StackConfig, insa: str) -> list[str]:
    devices = simulator_device_ids(cfg)
    scenarios = [arg for n, fault in SIMULATOR_SCENARIOS.items() if n <= len(devices)
                 for arg in ("--scenario", f"{devices[n - 1]}={fault}")]
    return [insa, "simulate", "--devices", str(len(devices)),
            "--secrets", str(cfg.rundir / "devices.env"), "--interval", "5",
            "--fault-onset", str(SIMULATOR_FAULT_ONSET_S),
            "--fault-ramp", str(SIMULATOR_FAULT_RAMP_S), *scenarios]


def service_environment(cfg: StackConfig, secret: dict[str, str],
                        service: Service) -> dict[str, str]:
    """What one service is given, under the same names as compose.yaml: the servers, its
    own broker password and, for the API, its signing key and first admin's password;
    never another service's secrets."""
    env = {
        "INSA_ENV": "development",
        "INSA_DATABASE_URL": f"postgresql://insa:{secret['postgres']}@127.0.0.1:{cfg.pg_port}/insa",
        "INSA_REDIS_URL": f"redis://:{secret['redis']}@127.0.0.1:{cfg.redis_port}/0",
        "INSA_MQTT_HOST": "127.0.0.1",
        "INSA_MQTT_PORT": str(cfg.mqtt_port),
        f"{service.env_prefix}MQTT_PASSWORD": secret[service.account],
        f"{service.env_prefix}HTTP_PORT": str(cfg.http_ports[service.name]),
    }
    if service is INGESTOR:  # the Sparkplug B host too, on the stack's one replica
        env["INSA_INGESTOR_SPARKPLUG_HOST_ID"] = SPARKPLUG_HOST_ID
        env["INSA_INGESTOR_SPARKPLUG_PASSWORD"] = secret[SPARKPLUG_ACCOUNT]
    if service is API:
        env["INSA_API_JWT_SECRET"] = secret[API_JWT_SECRET]
        env["INSA_API_ADMIN_PASSWORD"] = secret[API_ADMIN_PASSWORD]
    return env


def simulator_environment(cfg: StackConfig) -> dict[str, str]:
    """Where the broker is; the devices' passwords come from their own file."""
    return {"INSA_MQTT_HOST": "127.0.0.1", "INSA_MQTT_PORT": str(cfg.mqtt_port)}


def write_private(path: Path, text: str) -> None:
    """Created 0600 before a byte is written: secrets are never readable by others, not
    even for a moment."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


def _program(name: str, argv: list[str], cfg: StackConfig, *, user: str | None = None,
             env: dict[str, str] | None = None, autostart: bool = True,
             stopsignal: str = "TERM", priority: int = 100) -> str:
    command = " ".join(_quote(a) for a in argv)
    # Never give up on a program (supervisord's FATAL): services wait for their
    # dependencies rather than exit, and anything that does exit is started again, with
    # supervisord's backoff growing by a second per failed start.
    lines = [f"[program:{name}]", f"command={command}", f"priority={priority}",
             f"autostart={'true' if autostart else 'false'}", "autorestart=true",
             "startsecs=2", f"startretries={START_RETRIES}", f"stopsignal={stopsignal}",
             "stopwaitsecs=30",
             "stopasgroup=true", "killasgroup=true", "redirect_stderr=true",
             f"stdout_logfile={cfg.rundir / 'logs' / (name + '.log')}",
             "stdout_logfile_maxbytes=20MB", "stdout_logfile_backups=2",
             f"directory={REPO_ROOT}"]
    if user:
        lines.append(f"user={user}")
    if env:
        lines.append("environment=" + ",".join(f'{k}="{v}"' for k, v in env.items()))
    return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c in arg for c in " '\"") else arg


def write_supervisor_config(cfg: StackConfig, pg: PostgresSpec, rd: RedisSpec,
                            broker: BrokerSpec, secret: dict[str, str],
                            pg_user: str | None, redis_user: str | None) -> None:
    insa = str(Path(sys.executable).parent / "insa")
    programs = [
        _program("postgres", pg.argv(), cfg, user=pg_user, stopsignal="INT", priority=10),
        _program("redis", rd.argv(), cfg, user=redis_user, priority=10),
        _program("mosquitto", broker.argv(), cfg, priority=10),
        *[_program(s.name, [insa, "run", s.name], cfg, env=service_environment(cfg, secret, s),
                   autostart=False) for s in SERVICES],
        _program("simulator", simulator_argv(cfg, insa), cfg, env=simulator_environment(cfg),
                 autostart=False, priority=200),
    ]
    sock = cfg.rundir / "supervisor.sock"
    write_private(cfg.supervisor_conf,  # it holds every service's environment
        f"[supervisord]\npidfile={cfg.pidfile}\nlogfile={cfg.rundir / 'logs' / 'supervisord.log'}\n"
        f"childlogdir={cfg.rundir / 'logs'}\nnodaemon=false\n\n"
        f"[unix_http_server]\nfile={sock}\nchmod=0700\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n\n" + "\n".join(programs))


def supervisorctl(cfg: StackConfig, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(cfg.supervisor_conf),
         *args], capture_output=True, text=True)
    if check and result.returncode not in (0, 3):  # 3: some program is not RUNNING
        raise DevstackError(f"supervisorctl {' '.join(args)} failed: {result.stdout}"
                            f"{result.stderr}")
    return result.stdout


def supervisord_pid(cfg: StackConfig) -> int | None:
    try:
        pid = int(cfg.pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def up(cfg: StackConfig) -> str:
    from shared.migrate import migrate

    for sub in ("logs", "postgres", "redis", "mosquitto"):
        (cfg.rundir / sub).mkdir(parents=True, exist_ok=True)
    cfg.rundir.chmod(0o755)  # the server accounts must traverse it
    devices = simulator_device_ids(cfg)
    secret = load_secrets(cfg.rundir, devices)
    pg_user = unprivileged_user("postgres")
    redis_user = unprivileged_user("redis")
    pg = PostgresSpec(cfg.rundir / "postgres" / "data", cfg.pg_port, "insa", secret["postgres"])
    rd = RedisSpec(cfg.rundir / "redis", cfg.redis_port, secret["redis"])
    broker = BrokerSpec(cfg.rundir / "mosquitto", cfg.mqtt_port, cfg.mqtts_port)
    dsn = service_environment(cfg, secret, API)["INSA_DATABASE_URL"]
    running = supervisord_pid(cfg)
    if running is None:
        for port in (cfg.pg_port, cfg.redis_port, cfg.mqtt_port, cfg.mqtts_port,
                     *cfg.http_ports.values()):
            if port_open(port):
                raise DevstackError(f"port {port} is already in use; set INSA_STACK_*_PORT")
        init_postgres(pg, pg_user)
        hand_over(rd.datadir, redis_user)
        prepare_broker(broker, {name: secret[name] for name in SERVICE_ACCOUNTS},
                       {name: secret[name] for name in devices},
                       run_as=unprivileged_user("mosquitto"))
        write_supervisor_config(cfg, pg, rd, broker, secret, pg_user, redis_user)
        subprocess.run([str(Path(sys.executable).parent / "supervisord"), "-c",
                        str(cfg.supervisor_conf)], check=True)
    for port, what in ((cfg.redis_port, "redis"), (cfg.mqtt_port, "mosquitto")):
        wait_for_port(port, timeout=60, what=what)
    wait_for_postgres(cfg.pg_port, timeout=60)
    _ensure_database(pg)
    applied = asyncio.run(migrate(dsn))
    storage = asyncio.run(_storage(dsn))
    asyncio.run(_load_default_rules(dsn))
    asyncio.run(_register_simulated_wells(dsn, simulator_device_ids(cfg)))
    supervisorctl(cfg, "start", *(s.name for s in SERVICES), "simulator")
    return summary(cfg, applied, storage, already_running=running is not None)


async def _load_default_rules(dsn: str) -> None:
    """The built-in alert rules, so a newcomer sees alerts for the simulator's faults."""
    from shared import db
    from shared.alerting.defaults import load_defaults

    conn = await db.connect(dsn)
    try:
        await load_defaults(conn)
    finally:
        await conn.close()


async def _register_simulated_wells(dsn: str, device_ids: list[str]) -> None:
    """The simulated wells with their equipment, as an integrator enters it through the
    API (`attributes`), so the built-in protection rules judge each by its own motor and
    pump (the simulator's wells are drawn from (seed 0, device id): the same every run)."""
    from services.simulator.well import design_well, well_attributes
    from shared import db

    conn = await db.connect(dsn)
    try:
        await conn.executemany(
            """
            INSERT INTO devices (device_id, metadata) VALUES ($1, jsonb_build_object(
                'attributes', $2::jsonb, 'tags', '["simulated"]'::jsonb))
            ON CONFLICT (device_id) DO UPDATE
               SET metadata = devices.metadata || jsonb_build_object('attributes', $2::jsonb)
            """, [(d, well_attributes(design_well(d))) for d in device_ids])
    finally:
        await conn.close()


async def _storage(dsn: str) -> str:
    """What the telemetry is stored on, as the migrations decided."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        server = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    if version:
        return f"TimescaleDB {version} (hypertables, compression, continuous aggregates)"
    return (f"plain PostgreSQL {server} (TimescaleDB is not installed: ordinary tables and "
            "views stand in for hypertables and rollups)")


def _ensure_database(pg: PostgresSpec) -> None:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(pg.dsn())  # after wait_for_postgres: it accepts logins
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'insa'"):
                await conn.execute("CREATE DATABASE insa")
        finally:
            await conn.close()

    asyncio.run(create())


def summary(cfg: StackConfig, applied: list[str], storage: str, already_running: bool) -> str:
    state = "was already running" if already_running else "is up"
    return (
        f"INSA local stack {state} (run directory {cfg.rundir})\n"
        f"  PostgreSQL  127.0.0.1:{cfg.pg_port}  db insa, user insa "
        f"(password in {cfg.rundir / 'secrets.env'})\n"
        f"  Redis       127.0.0.1:{cfg.redis_port}\n"
        f"  Mosquitto   mqtt://127.0.0.1:{cfg.mqtt_port}  mqtts://127.0.0.1:{cfg.mqtts_port} "
        f"(CA {cfg.rundir / 'mosquitto' / 'config' / 'certs' / 'ca.crt'})\n"
        + "".join(f"  {name:<11} http://127.0.0.1:{port}/health/ready  /metrics\n"
                  for name, port in cfg.http_ports.items()) +
        f"  simulator   {cfg.simulator_devices} devices (sim-esp-001...), faults from "
        f"{SIMULATOR_FAULT_ONSET_S // 60} min after start: "
        + ", ".join(f"sim-esp-{n:03d} {fault}" for n, fault in SIMULATOR_SCENARIOS.items()
                    if n <= cfg.simulator_devices) + "\n"
        f"  diagnoses   SELECT * FROM open_diagnoses, or subscribe to {DIAGNOSTICS_FILTER} "
        "with a subscriber account (below)\n"
        "  alerts      built-in rules loaded (insa rules load-defaults): SELECT * FROM alerts, "
        f"or subscribe to {ALERTS_FILTER} with a subscriber account (below)\n"
        f"  console     http://127.0.0.1:{cfg.http_ports['api']}/console/  log in as admin "
        f"with the {API_ADMIN_PASSWORD} of {cfg.rundir / 'secrets.env'}\n"
        f"  API         http://127.0.0.1:{cfg.http_ports['api']}/api/v1/docs  log in as admin "
        f"with the {API_ADMIN_PASSWORD} of {cfg.rundir / 'secrets.env'}:\n"
        f"              token=$(curl -s -X POST http://127.0.0.1:{cfg.http_ports['api']}/api/v1"
        "/auth/login -H 'Content-Type: application/json' -d '{\"username\": \"admin\", "
        f"\"password\": \"'$(grep ^{API_ADMIN_PASSWORD}= {cfg.rundir / 'secrets.env'} | cut -d= "
        "-f2-)'\"}' | python3 -c 'import json, sys; "
        "print(json.load(sys.stdin)[\"access_token\"])')\n"
        # Each consuming system gets its accounts from the API (docs/operations.md).
        "  subscribers one MQTT account per consumer of each system that reads alerts and "
        "diagnoses, username = client id = <system>.<consumer>; as admin (the token above):\n"
        f"              curl -s -X POST http://127.0.0.1:{cfg.http_ports['api']}/api/v1"
        "/subscribers -H \"Authorization: Bearer $token\" -H 'Content-Type: application/json' "
        f"-d '{{\"name\": \"console\", \"topics\": [\"{ALERTS_FILTER}\", "
        f"\"{DIAGNOSTICS_FILTER}\"], \"consumers\": [\"1\"]}}'\n"
        f"              mosquitto_sub -p {cfg.mqtt_port} -u console.1 -i console.1 "
        f"-P <its password> -q 1 -c -v -t '{ALERTS_FILTER}' -t '{DIAGNOSTICS_FILTER}'\n"
        "  gateways    one account for a bridge's many devices, or a Sparkplug B edge node "
        f"(primary host id {SPARKPLUG_HOST_ID}): POST /api/v1/gateways "
        "(docs/operations.md, \"Gateways and Sparkplug B edge nodes\")\n"
        f"  storage     {storage}\n"
        f"  migrations  {', '.join(applied) if applied else 'up to date'}\n"
        f"  logs        {cfg.rundir / 'logs'}\n"
        "Status: insa stack status (or make status).  Stop: make stop (insa stack down).")


def down(cfg: StackConfig) -> str:
    pid = supervisord_pid(cfg)
    if pid is None:
        return "INSA local stack is not running"
    os.kill(pid, signal.SIGTERM)  # supervisord stops every program, then itself
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and supervisord_pid(cfg) is not None:
        time.sleep(0.2)
    if supervisord_pid(cfg) is not None:
        raise DevstackError(f"supervisord (pid {pid}) did not stop within 90 s")
    return "INSA local stack stopped"


def status(cfg: StackConfig) -> str:
    if supervisord_pid(cfg) is None:
        return "INSA local stack is not running"
    return supervisorctl(cfg, "status")
