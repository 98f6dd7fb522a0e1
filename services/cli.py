"""The `insa` command: migrate, run a service, the local stack, the simulator, benchmarks.

It lives beside the services because it names them; `shared/` never does.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path

import click

SERVICES = "insa.services"  # the entry-point group services register in (pyproject.toml)


def runnable_services() -> list[str]:
    """The services installed in the `insa.services` entry-point group."""
    return sorted(ep.name for ep in entry_points(group=SERVICES))


@click.group()
def main() -> None:
    """INSA IIoT platform."""


@main.command()
@click.option("--database-url", envvar="INSA_DATABASE_URL", required=True,
              help="PostgreSQL URL (default: $INSA_DATABASE_URL).")
def migrate(database_url: str) -> None:
    """Apply pending SQL migrations (safe to run concurrently)."""
    from shared.logging import configure_logging
    from shared.migrate import migrate as run_migrations

    configure_logging("migrate", fmt=os.environ.get("INSA_LOG_FORMAT", "json"))
    applied = asyncio.run(run_migrations(database_url))
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@main.command()
@click.argument("service", type=click.Choice(runnable_services()))
def run(service: str) -> None:
    """Run one service in the foreground (settings from INSA_* environment variables; bad
    ones end it with status 1 and the reason)."""
    [entry] = entry_points(group=SERVICES, name=service)
    entry.load()()


@main.command()
@click.option("--config", "config_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site's mapping file (TOML; docs/examples/edge-site.toml).")
def edge(config_file: Path) -> None:
    """Run a site's edge connectors: read the OPC UA nodes and Modbus TCP registers the
    mapping file names and publish them as its gateway, through a local store-and-forward
    buffer (docs/operations.md, "Edge connectors"). Stops on SIGTERM or SIGINT; exit
    status 2 for a bad mapping file."""
    from services.edge.main import main as run_edge

    sys.exit(run_edge(config_file))


@main.command("broker-accounts")
@click.option("--file", "path", type=click.Path(dir_okay=False), required=True,
              help="The dynamic-security plugin's file (created, or updated in place).")
def broker_accounts(path: str) -> None:
    """Write the broker's platform accounts from INSA_MQTT_PASSWORD_<ROLE> variables.

    Every service role (ingestor, diagnostics, alerts, api, subscriber, admin, health)
    needs its secret; device accounts already in the file are kept. A further replica's
    or consumer's account comes from INSA_MQTT_PASSWORD_<ROLE>_<N> (N from 2): e.g.
    INSA_MQTT_PASSWORD_ALERTS_2 makes `insa-alerts-2` with the alerts role.
    """

    from shared.broker_accounts import SERVICE_ACCOUNTS, write_config_file
    from shared.settings import MIN_SECRET_LENGTH, is_placeholder

    wanted = {"INSA_MQTT_PASSWORD_" + a.removeprefix("insa-").upper(): a
              for a in SERVICE_ACCOUNTS}
    for var in sorted(os.environ):
        role_var, _, number = var.rpartition("_")
        if role_var in wanted and number.isdigit() and int(number) >= 2:
            wanted[var] = f"{wanted[role_var]}-{int(number)}"
    passwords, problems = {}, []
    for var, account in wanted.items():
        secret = os.environ.get(var, "")
        if is_placeholder(secret) and os.environ.get("INSA_ENV") != "development":
            problems.append(f"{var} is missing or a placeholder (at least "
                            f"{MIN_SECRET_LENGTH} characters)")
        passwords[account] = secret
    if problems:
        raise click.UsageError("; ".join(problems))
    write_config_file(Path(path), passwords)
    click.echo(f"broker accounts written to {path}: {', '.join(wanted.values())}")


@main.group()
def stack() -> None:
    """The whole platform on this machine without Docker (see README)."""


def _stack_call(action: str) -> None:
    from devtools.stack import stack as local_stack
    from devtools.stack.processes import DevstackError

    cfg = local_stack.StackConfig.from_env()
    try:
        click.echo(getattr(local_stack, action)(cfg))
    except DevstackError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@stack.command()
def up() -> None:
    """Start PostgreSQL, Redis, Mosquitto, migrations, services and the simulator."""
    _stack_call("up")


@stack.command()
def down() -> None:
    """Stop exactly what `up` started."""
    _stack_call("down")


@stack.command()
def status() -> None:
    """Show what runs and its state."""
    _stack_call("status")


FAULT_HELP = ("gas_lock, pump_off, broken_shaft, closed_valve, overload, underload, "
              "overheating, bearing_wear, vsd_out_of_range, sensor_fault "
              "(sensor_flatline is an alias of sensor_fault)")


def parse_scenarios(items: tuple[str, ...]) -> dict[str, str]:
    """DEVICE=FAULT pairs -> {device: fault code}."""
    from services.simulator.faults import canonical_fault

    scenarios = {}
    for item in items:
        device, _, fault = item.partition("=")
        try:
            scenarios[device] = canonical_fault(fault)
        except ValueError:
            raise click.BadParameter(f"unknown fault {fault!r} in {item!r}",
                                     param_hint="--scenario") from None
    return scenarios


@main.command()
@click.option("--secrets", "secrets_file", type=click.Path(exists=True, dir_okay=False),
              required=True, help="File of device=password lines (the stack's secrets.env).")
@click.option("--prefix", default="sim-esp-", show_default=True,
              help="Simulate the devices in the file whose ids start with this.")
@click.option("--devices", type=int, default=None, help="At most this many devices.")
@click.option("--interval", type=float, default=5.0, show_default=True,
              help="Seconds between readings of one device.")
@click.option("--scenario", multiple=True, metavar="DEVICE=FAULT",
              help=f"Inject a fault into a device (repeatable). Faults: {FAULT_HELP}.")
@click.option("--fault-onset", type=float, default=120.0, show_default=True,
              help="Seconds after start when faults begin.")
@click.option("--fault-ramp", type=float, default=600.0, show_default=True,
              help="Seconds for a gradual fault to develop fully (sudden ones ignore it).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Wells are drawn from (seed, device id): the same well on every run.")
@click.option("--mqtt-host", envvar="INSA_MQTT_HOST", default="127.0.0.1", show_default=True)
@click.option("--mqtt-port", envvar="INSA_MQTT_PORT", type=int, default=1883, show_default=True)
def simulate(secrets_file: str, prefix: str, devices: int | None, interval: float,
             scenario: tuple[str, ...], fault_onset: float, fault_ramp: float,
             duration: float | None, seed: int, mqtt_host: str, mqtt_port: int) -> None:
    """Run a fleet of simulated ESP controllers publishing telemetry over MQTT."""

    from services.simulator.main import SimulatorConfig, read_credentials
    from services.simulator.main import simulate as run_simulation
    from shared.logging import configure_logging

    configure_logging("simulator", fmt=os.environ.get("INSA_LOG_FORMAT", "json"))
    credentials = read_credentials(Path(secrets_file), prefix)
    chosen = dict(sorted(credentials.items())[:devices] if devices else sorted(credentials.items()))
    if not chosen:
        raise click.UsageError(f"no devices starting with {prefix!r} in {secrets_file}")
    cfg = SimulatorConfig(mqtt_host, mqtt_port, chosen, interval, parse_scenarios(scenario),
                          fault_onset, fault_ramp, duration, seed)
    try:
        asyncio.run(run_simulation(cfg))
    except KeyboardInterrupt:
        pass


@main.command("simulate-file")
@click.argument("output", type=click.Path(dir_okay=False, writable=True))
@click.option("--wells", type=click.IntRange(1), default=10, show_default=True)
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=24.0,
              show_default=True)
@click.option("--interval", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between readings of one well.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scenario", multiple=True, metavar="WELL=FAULT",
              help=f"Give a well a fault (repeatable), e.g. W-3=gas_lock. Faults: {FAULT_HELP}.")
@click.option("--faults", "random_faults", type=click.IntRange(0), default=0,
              show_default=True, help="Give this many other wells a random fault each.")
@click.option("--setpoint-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Operator VSD setpoint steps across the fleet (healthy events).")
@click.option("--stops", type=click.IntRange(0), default=0, show_default=True,
              help="Planned stops and restarts across the fleet (healthy events).")
@click.option("--glitches/--no-glitches", default=True, show_default=True,
              help="Single-sample spikes, gaps and dropped metrics.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Default: from OUTPUT's extension (.csv), else jsonl.")
@click.option("--labels", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Ground truth (JSON lines). Default: OUTPUT with .labels.jsonl.")
@click.option("--start", type=click.DateTime(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"]),
              default="2026-01-01", show_default=True, help="UTC time of the first reading.")
@click.option("--prefix", default="W-", show_default=True, help="Well ids: PREFIX1...")
def simulate_file(output: str, wells: int, hours: float, interval: float, seed: int,
                  scenario: tuple[str, ...], random_faults: int, setpoint_steps: int,
                  stops: int, glitches: bool, fmt: str | None, labels: str | None,
                  start: datetime, prefix: str) -> None:
    """Write a simulated fleet's readings for `insa diagnose` (JSON lines or CSV), a
    ground-truth labels file and the wells' equipment (OUTPUT with .attributes.json).
    Deterministic for a seed."""
    from datetime import UTC

    from services.simulator.scenario_file import FleetConfig, generate

    path = Path(output)
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    labels_path = Path(labels) if labels else path.with_name(path.stem + ".labels.jsonl")
    if labels_path.resolve() == path.resolve():
        raise click.UsageError("--labels must differ from OUTPUT")
    cfg = FleetConfig(wells=wells, hours=hours, interval=interval, seed=seed,
                      scenarios=parse_scenarios(scenario), random_faults=random_faults,
                      setpoint_steps=setpoint_steps, stops=stops, glitches=glitches,
                      start=start.replace(tzinfo=UTC), prefix=prefix)
    attributes = path.with_name(path.stem + ".attributes.json")
    try:
        n = generate(cfg, path, labels_path, fmt, attributes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    click.echo(f"{n} readings from {wells} wells -> {path} ({fmt}); labels -> {labels_path}; "
               f"equipment (for insa rules backtest --attributes) -> {attributes}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--limits", "limits_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="JSON overrides of the diagnosis limits: {defaults, device_types, devices}.")
@click.option("--attributes", "devices_file", type=click.Path(exists=True, dir_okay=False,
                                                               path_type=Path),
              help="Devices' equipment, as for `insa rules backtest --attributes` (the VSD's "
                   "configured range is judged from it).")
def diagnose(file: Path, limits_file: Path | None, devices_file: Path | None) -> None:
    """Diagnose the readings in FILE (JSON lines or .csv); diagnosis events go to stdout as
    JSON lines, in file order. Bad lines are reported on stderr and skipped."""
    import orjson

    from shared.alerting.offline import load_devices
    from shared.diagnosis.engine import DiagnosisEngine
    from shared.diagnosis.limits import LimitBook
    from shared.diagnosis.offline import read_file

    try:
        limits = LimitBook.from_json(limits_file.read_bytes()) if limits_file else LimitBook()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limits") from exc
    try:
        devices = load_devices(devices_file.read_bytes()) if devices_file else {}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attributes") from exc
    engine = DiagnosisEngine(limits)
    engine.equipment = {d: dict(device.attributes) for d, device in devices.items()}
    out = sys.stdout.buffer
    bad = 0

    def report(line: int, error: str) -> None:
        nonlocal bad
        bad += 1
        click.echo(f"{file}:{line}: skipped: {error}", err=True)

    with click.progressbar(length=file.stat().st_size, label="diagnosing", file=sys.stderr,
                           show_eta=True) as bar:
        for event in engine.process_all(read_file(file, report, bar.update)):
            out.write(orjson.dumps(event.as_dict()) + b"\n")
    out.flush()
    if bad:
        click.echo(f"{bad} line(s) skipped", err=True)


@main.group()
def rules() -> None:
    """Alert rules in the database."""


@rules.command("load-defaults")
@click.option("--database-url", envvar="INSA_DATABASE_URL", required=True,
              help="PostgreSQL URL (default: $INSA_DATABASE_URL).")
@click.option("--replace", is_flag=True,
              help="Also reset built-in rules that were changed since they were loaded.")
def rules_load_defaults(database_url: str, replace: bool) -> None:
    """Add the built-in ESP rule set (protection from each well's equipment, critical diagnoses)."""
    from shared import db
    from shared.alerting.defaults import load_defaults

    async def load() -> tuple[int, int]:
        conn = await db.connect(database_url)
        try:
            return await load_defaults(conn, replace)
        finally:
            await conn.close()

    written, kept = asyncio.run(load())
    click.echo(f"built-in rules: {written} written, {kept} already there")


@rules.command("backtest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path),
              help="A JSON array of rules (as POST /rules takes). Default: the built-in set.")
@click.option("--attributes", "devices_file", type=click.Path(exists=True, dir_okay=False,
                                                              path_type=Path),
              help='Per device what scopes match and limits come from: {"W-1": '
                   '{"device_type": "esp", "tags": ["north"], "attributes": '
                   '{"motor_rated_current": 46}}} (insa simulate-file writes one).')
@click.option("--limits", "limits_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="JSON overrides of the diagnosis limits, as for `insa diagnose`.")
@click.option("--tick-seconds", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, help="The engine's timer, in event time.")
def rules_backtest(file: Path, rules_file: Path | None, devices_file: Path | None,
                   limits_file: Path | None, tick_seconds: float) -> None:
    """Replay the readings in FILE (the `insa diagnose` formats) through the diagnosis
    engine and the alert engine, in event time, as the services run them; every alert
    transition goes to stdout as a JSON line. Nothing is stored or published."""
    import orjson

    from shared.alerting.offline import Diagnosis, load_devices, load_rules, replay
    from shared.diagnosis.engine import DiagnosisEngine
    from shared.diagnosis.events import Reading
    from shared.diagnosis.limits import LimitBook
    from shared.diagnosis.offline import read_file

    try:
        rules = load_rules(rules_file.read_bytes() if rules_file else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rules") from exc
    try:
        devices = load_devices(devices_file.read_bytes()) if devices_file else {}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attributes") from exc
    try:
        limits = LimitBook.from_json(limits_file.read_bytes()) if limits_file else LimitBook()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limits") from exc
    engine = DiagnosisEngine(limits)
    engine.equipment = {d: dict(device.attributes) for d, device in devices.items()}

    def diagnose(device_id: str, ts: float, values: dict[str, float]) -> list[Diagnosis]:
        return [Diagnosis(e.code, e.metric or "", e.severity, e.cleared, e.confidence,
                          e.evidence.get("superseded_by"))
                for e in engine.process(Reading(device_id, ts, values))]

    def report(line: int, error: str) -> None:
        click.echo(f"{file}:{line}: skipped: {error}", err=True)

    with click.progressbar(length=file.stat().st_size, label="reading", file=sys.stderr) as bar:
        readings = sorted(((r.device_id, r.ts, r.values)
                           for r in read_file(file, report, bar.update)), key=lambda r: r[1])
    out = sys.stdout.buffer
    with click.progressbar(readings, label="replaying", file=sys.stderr,
                           show_eta=True) as items:
        for transition in replay(rules, items, diagnose, devices, tick_seconds):
            out.write(orjson.dumps(transition) + b"\n")
    out.flush()


try:  # dev tooling (devtools/), which a production install may leave out
    from devtools.bench.cli import bench
except ImportError:
    pass
else:
    main.add_command(bench)


if __name__ == "__main__":
    main()
