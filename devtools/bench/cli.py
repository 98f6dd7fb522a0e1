"""`insa bench ...`: the benchmarks (devtools/bench/), figures printed and written as JSON.
Each command imports its benchmark when run, so `insa --help` stays quick."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.group()
def bench() -> None:
    """Benchmarks (figures printed, and written as JSON)."""


@bench.command("ingest")
@click.option("--via", type=click.Choice(["device", "gateway", "sparkplug"]), default="device",
              show_default=True, help="The ingest path: devices' own telemetry topics, "
              "gateways' batch topic (a reading of each child per message), or Sparkplug B "
              "edge nodes (a DDATA per reading of a child) to the ingestor's host.")
@click.option("--messages", type=int, default=100_000, show_default=True,
              help="Messages in all (a gateway's holds --children readings).")
@click.option("--devices", type=int, default=20, show_default=True,
              help="Devices; with --via gateway, gateways; with --via sparkplug, edge nodes.")
@click.option("--children", type=click.IntRange(1), default=10, show_default=True,
              help="Child devices per gateway or edge node (--via gateway or sparkplug).")
@click.option("--sparkplug-qos", type=click.IntRange(0, 1), default=0, show_default=True,
              help="QoS of the edge nodes' births and data (the specification's is 0).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cap phase 2's publishers at this many readings/s in all (default: as "
              "fast as they go). Sparkplug has no backpressure: at full speed the host "
              "drops data once the ingestor's window is full.")
@click.option("--batch", "batch_max_messages", type=int, default=None,
              help="Ingestor batch size (messages; default: the ingestor's own).")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Ingestor processes, each taking its partition of the devices.")
@click.option("--units", is_flag=True,
              help="Every value as a {value, unit} object, most in a unit to convert.")
@click.option("--malformed", is_flag=True,
              help="Phase 2's messages all rejected after the full parse (a value no metric "
              "takes): what a reject costs beside a stored reading (--via device).")
@click.option("--pipeline", is_flag=True,
              help="Run the diagnostics and alerts services too, and report their stream "
              "backlog over phase 2 and how long it takes to drain.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON result here (default bench-results/ingest-<time>.json).")
def bench_ingest(via: str, messages: int, devices: int, children: int, sparkplug_qos: int,
                 rate: float | None, batch_max_messages: int | None, replicas: int, units: bool,
                 malformed: bool, pipeline: bool, output: str | None) -> None:
    """Ingest throughput, latency, loss and duplicates vs the broker's raw pass-through."""
    from devtools.bench.ingest import BenchConfig
    from devtools.bench.ingest import run as run_bench
    from devtools.bench.ingest_report import report
    from shared.logging import configure_logging

    if units and via == "sparkplug":
        raise click.BadParameter("Sparkplug metrics carry no {value, unit} objects",
                                 param_hint="--units")
    configure_logging("bench", level="WARNING", fmt="console")

    batch = {} if batch_max_messages is None else {"batch_max_messages": batch_max_messages}
    result = run_bench(BenchConfig(messages=messages, devices=devices, replicas=replicas,
                                   units=units, via=via, children=children,
                                   sparkplug_qos=sparkplug_qos, rate=rate,
                                   pipeline=pipeline, malformed=malformed, **batch),
                       progress=lambda line: click.echo(line, err=True))
    click.echo(report(result) + f"\nJSON: {save_result('ingest', result, output)}")


@bench.command("broker-kill")
@click.option("--rate", type=float, default=500, show_default=True, help="Readings/s in all.")
@click.option("--seconds", type=float, default=20, show_default=True,
              help="Publishing time per scenario; the kill comes half-way.")
def bench_broker_kill(rate: float, seconds: float) -> None:
    """What a broker kill -9 loses of the readings it had acknowledged."""
    from devtools.bench.broker_kill import report
    from devtools.bench.broker_kill import run as run_bench
    from shared.logging import configure_logging

    configure_logging("bench", level="WARNING", fmt="console")
    click.echo(report(run_bench(rate, seconds, progress=lambda s: click.echo(s, err=True))))


@bench.command("flood")
@click.option("--qos", type=click.IntRange(0, 1), default=0, show_default=True)
@click.option("--seconds", type=float, default=5, show_default=True,
              help="How long the flooding device publishes.")
def bench_flood(qos: int, seconds: float) -> None:
    """Other devices' latency while one device floods, with the flood guard off and on."""
    from devtools.bench.flood import report
    from devtools.bench.flood import run as run_bench
    from shared.logging import configure_logging

    configure_logging("bench", level="WARNING", fmt="console")
    click.echo(report(run_bench(qos, seconds, progress=lambda s: click.echo(s, err=True))))


@bench.command("diagnose")
@click.option("--wells", type=click.IntRange(1), default=100, show_default=True)
@click.option("--hours", type=float, default=12.0, show_default=True)
@click.option("--interval", type=float, default=60.0, show_default=True,
              help="Seconds between one well's readings.")
def bench_diagnose(wells: int, hours: float, interval: float) -> None:
    """Readings judged per second: the engine alone, and the service draining the stream."""
    from devtools.bench.diagnose import BenchConfig, report
    from devtools.bench.diagnose import run as run_bench
    from shared.logging import configure_logging

    configure_logging("bench", level="WARNING", fmt="console")
    result = run_bench(BenchConfig(wells=wells, hours=hours, interval=interval),
                       progress=lambda s: click.echo(s, err=True))
    click.echo(report(result) + f"\nJSON: {save_result('diagnose', result)}")


@bench.command("alerts")
@click.option("--wells", type=click.IntRange(1), default=100, show_default=True)
@click.option("--hours", type=float, default=6.0, show_default=True,
              help="Simulated history the engine evaluates.")
@click.option("--latency-devices", type=click.IntRange(1), default=100, show_default=True)
@click.option("--latency-seconds", type=float, default=30.0, show_default=True)
def bench_alerts(wells: int, hours: float, latency_devices: int,
                 latency_seconds: float) -> None:
    """Values evaluated per second (200 rules) and reading→published-alert latency."""
    from devtools.bench.alerts import BenchConfig, report
    from devtools.bench.alerts import run as run_bench
    from shared.logging import configure_logging

    configure_logging("bench", level="WARNING", fmt="console")
    result = run_bench(BenchConfig(wells=wells, hours=hours, latency_devices=latency_devices,
                                   latency_seconds=latency_seconds),
                       progress=lambda s: click.echo(s, err=True))
    click.echo(report(result) + f"\nJSON: {save_result('alerts', result)}")


@bench.command("api")
@click.option("--devices", type=click.IntRange(1), default=5000, show_default=True,
              help="Devices, each with its latest values (and a few minutes of readings).")
@click.option("--history-devices", type=click.IntRange(1), default=5, show_default=True,
              help="Of them, how many have --days of readings at 60 s.")
@click.option("--days", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--requests", type=click.IntRange(10), default=200, show_default=True,
              help="Per endpoint, sequential and again concurrent (within --budget).")
@click.option("--budget", "budget_seconds", type=float, default=60.0, show_default=True,
              help="Seconds at most per endpoint and variant (at least 10 requests).")
@click.option("--concurrency", type=click.IntRange(1), default=8, show_default=True)
@click.option("--sse-clients", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON result here (default bench-results/api-<time>.json).")
def bench_api(devices: int, history_devices: int, days: float, requests: int,
              budget_seconds: float, concurrency: int, sse_clients: int,
              output: str | None) -> None:
    """Read latency (fleet latest, 24 h raw, 30 days hourly) and live SSE clients held."""
    from devtools.bench.api import BenchConfig, report
    from devtools.bench.api import run as run_bench
    from shared.logging import configure_logging

    if history_devices > devices:
        raise click.BadParameter("at most --devices", param_hint="--history-devices")
    configure_logging("bench", level="WARNING", fmt="console")
    result = run_bench(BenchConfig(devices=devices, history_devices=history_devices,
                                   days=days, requests=requests, budget_seconds=budget_seconds,
                                   concurrency=concurrency, sse_clients=sse_clients),
                       progress=lambda s: click.echo(s, err=True))
    click.echo(report(result) + f"\nJSON: {save_result('api', result, output)}")


@bench.command("console")
@click.option("--devices", type=click.IntRange(1), default=5000, show_default=True)
@click.option("--history-devices", type=click.IntRange(1), default=5, show_default=True,
              help="Of them, how many have --days of readings at 60 s.")
@click.option("--days", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--requests", type=click.IntRange(10), default=200, show_default=True,
              help="Sequential requests per page (within --budget).")
@click.option("--budget", "budget_seconds", type=float, default=30.0, show_default=True,
              help="Seconds at most per page (at least 10 requests).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON result here (default bench-results/console-<time>.json).")
def bench_console(devices: int, history_devices: int, days: float, requests: int,
                  budget_seconds: float, output: str | None) -> None:
    """The console's server time (fleet page, a well's 30-day trend) and first-load weight."""
    from devtools.bench.console import BenchConfig, report
    from devtools.bench.console import run as run_bench
    from shared.logging import configure_logging

    if history_devices > devices:
        raise click.BadParameter("at most --devices", param_hint="--history-devices")
    configure_logging("bench", level="WARNING", fmt="console")
    result = run_bench(BenchConfig(devices=devices, history_devices=history_devices,
                                   days=days, requests=requests,
                                   budget_seconds=budget_seconds),
                       progress=lambda s: click.echo(s, err=True))
    click.echo(report(result) + f"\nJSON: {save_result('console', result, output)}")


@bench.command("diagnose-eval")
@click.option("--seeds", default="101,102,103", show_default=True,
              help="Comma-separated: one fleet per seed and interval.")
@click.option("--fleet", type=click.Choice(["random", "simulator"]), default="random",
              show_default=True, help="Randomized wells of a model of their own (200 a "
              "seed), or the project's simulator (one fleet per seed and interval).")
@click.option("--intervals", default="5,15,30,60", show_default=True,
              help="Simulator fleets: comma-separated seconds between one well's readings.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON result here (default bench-results/diagnose-eval-<time>.json).")
def bench_diagnose_eval(seeds: str, fleet: str, intervals: str, output: str | None) -> None:
    """Per fault detected within 30 readings of developing, and healthy wells falsely
    diagnosed, on simulated fleets (tune on some seeds, report on others)."""
    from devtools.bench.diagnosis_eval import EvalConfig, report
    from devtools.bench.diagnosis_eval import run as run_bench

    cfg = EvalConfig(seeds=tuple(int(s) for s in seeds.split(",")),
                     intervals=tuple(float(i) for i in intervals.split(",")), fleet=fleet)
    result = run_bench(cfg, progress=lambda s: click.echo(s, err=True))
    click.echo(report(result) + f"\nJSON: {save_result('diagnose-eval', result, output)}")


@bench.command("soak")
@click.option("--minutes", type=float, default=30, show_default=True)
@click.option("--wells", type=int, default=100, show_default=True)
@click.option("--interval", type=float, default=0.4, show_default=True,
              help="Seconds between one well's readings.")
@click.option("--faults", type=int, default=10, show_default=True,
              help="Wells that develop a fault two minutes in.")
@click.option("--event-every", nargs=2, type=float, default=(30, 90), show_default=True,
              help="Seconds between reliability events (random in this range).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--keep-logs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Copy the services' and the broker's logs here at the end.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON result here (default bench-results/soak-<time>.json).")
def bench_soak(minutes: float, wells: int, interval: float, faults: int,
               event_every: tuple[float, float], seed: int, keep_logs: Path | None,
               output: str | None) -> None:
    """The whole platform under load with Redis, PostgreSQL and broker restarts and kill -9
    of each service at random; exits 1 if a guarantee broke."""
    import sys

    from devtools.bench.soak import SoakConfig
    from devtools.bench.soak import run as run_bench
    from devtools.bench.soak_checks import report
    from shared.logging import configure_logging

    configure_logging("bench", level="WARNING", fmt="console")
    result = run_bench(SoakConfig(minutes=minutes, wells=wells, interval=interval,
                                  faults=faults, event_every=event_every, seed=seed),
                       progress=lambda s: click.echo(s, err=True), keep_logs=keep_logs)
    click.echo(report(result) + f"\nJSON: {save_result('soak', result, output)}")
    if result["problems"]:
        sys.exit(1)


def save_result(name: str, result: dict[str, Any], output: str | None = None) -> Path:
    """A benchmark's figures as JSON (default bench-results/<name>-<time>.json)."""
    import time

    import orjson

    path = Path(output or f"bench-results/{name}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path
