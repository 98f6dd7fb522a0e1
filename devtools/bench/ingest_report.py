"""`insa bench ingest`'s printed report."""

from __future__ import annotations

from typing import Any


def report(result: dict[str, Any]) -> str:
    if result.get("via", "device") == "device":
        return report_device(result)
    return report_children(result)


def report_device(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    paced = result["paced"]
    plat = paced["latency_ms"]
    return "\n".join([
        f"ingest: {result['messages']:,} messages ({result['values']:,} values"
        f"{', each with a unit' if result['config'].get('units') else ''}"
        f"{', every one malformed: rejected' if result['config'].get('malformed') else ''}) "
        f"in {result['seconds']} s, {result['config']['replicas']} ingestor(s)",
        f"  sustained        {result['messages_per_s']:,} messages/s, "
        f"{result['values_per_s']:,} values/s"
        + ("" if result.get("rate_cap_readings_per_s") is None
           else f" (publishers capped at {result['rate_cap_readings_per_s']:,.0f} messages/s)"),
        f"  broker raw QoS 1 {result['broker_raw_messages_per_s']:,} messages/s "
        f"(ingest = {result['ratio_to_raw']:.0%} of raw)",
        f"  ingestor CPU     {result['ingestor_cpu_seconds']} s "
        f"({result['messages_per_cpu_second']:,} messages per CPU-second)",
        *_servers_line(result),
        *_replicas_line(result),
        *_backlog_line(result),
        f"  publish→commit   {_phase2(result)}: p50 {lat['p50']:.0f} ms, "
        f"p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
        f"{' (queueing)' if result.get('rate_cap_readings_per_s') is None else ''}",
        f"                   at {paced['messages_per_s']:,} msg/s: p50 {plat['p50']:.0f} ms, "
        f"p95 {plat['p95']:.0f} ms, p99 {plat['p99']:.0f} ms, max {plat['max']:.0f} ms",
        f"  lost             storage {result['lost']['storage']}, "
        f"stream {result['lost']['stream']} (all phases)",
        f"  duplicated       storage {result['duplicated']['storage']}, "
        f"stream {result['duplicated']['stream']} (all phases)",
        *_rejects_line(result),
    ])


def report_children(result: dict[str, Any]) -> str:
    """--via gateway or sparkplug: messages and readings apart (readings/s compares)."""
    cfg = result["config"]
    lat = result["latency_ms"]
    paced = result["paced"]
    plat = paced["latency_ms"]
    sparkplug = result.get("sparkplug")
    who = (f"{cfg['devices']} gateways of {result['children']} children" if sparkplug is None
           else f"{cfg['devices']} edge nodes of {result['children']} devices, "
                f"DDATA at QoS {sparkplug['qos']}")
    raw = "QoS 1" if sparkplug is None or sparkplug["qos"] else "QoS 0"
    lines = [
        f"ingest via {result['via']}: {who}",
        f"  {result['messages']:,} messages = {result['readings']:,} readings "
        f"({result['values']:,} values{', each with a unit' if cfg.get('units') else ''}) "
        + (f"in {result['seconds']} s" if result["readings_stored"] >= result["readings"]
           else f"sent, {result['readings_stored']:,} stored in {result['seconds']} s "
                "(to the last that came)")
        + f", {cfg['replicas']} ingestor(s)",
        f"  sustained        {result['readings_per_s']:,} readings/s "
        f"({result['messages_per_s']:,} messages/s, {result['values_per_s']:,} values/s"
        + ("" if result.get("rate_cap_readings_per_s") is None
           else f"; publishers capped at {result['rate_cap_readings_per_s']:,.0f} readings/s")
        + ")",
        f"  broker raw {raw} {result['broker_raw_readings_per_s']:,} readings/s "
        f"({result['broker_raw_messages_per_s']:,} messages/s; "
        f"ingest = {result['ratio_to_raw']:.0%} of raw)",
        f"  ingestor CPU     {result['ingestor_cpu_seconds']} s "
        f"({result['readings_per_cpu_second']:,} readings per CPU-second)",
        *_servers_line(result),
        *_replicas_line(result),
        *_backlog_line(result),
        f"  publish→commit   {_phase2(result)}: p50 {lat['p50']:.0f} ms, "
        f"p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
        f"{' (queueing)' if result.get('rate_cap_readings_per_s') is None else ''}",
        f"                   at {paced['readings_per_s']:,} readings/s: "
        f"p50 {plat['p50']:.0f} ms, p95 {plat['p95']:.0f} ms, p99 {plat['p99']:.0f} ms, "
        f"max {plat['max']:.0f} ms",
        f"  lost             storage {result['lost']['storage']}, "
        f"stream {result['lost']['stream']} readings (all phases)",
        f"  duplicated       storage {result['duplicated']['storage']}, "
        f"stream {result['duplicated']['stream']} readings (all phases)",
    ]
    if sparkplug is not None:
        came = sparkplug["all_values_came"]
        raw_lost = sparkplug.get("raw_lost")
        lines.append(f"  sparkplug        every value came: ingest "
                     f"{'yes' if came['ingest'] else 'NO'}, paced "
                     f"{'yes' if came['paced'] else 'NO'}; rebirths asked "
                     f"{sparkplug['rebirths_asked']}"
                     + (f"; raw subscriber missed {raw_lost} messages" if raw_lost else ""))
    return "\n".join([*lines, *_rejects_line(result)])


def _phase2(result: dict[str, Any]) -> str:
    cap = result.get("rate_cap_readings_per_s")
    return "at saturation" if cap is None else f"under the {cap:,.0f}/s cap"


def _servers_line(result: dict[str, Any]) -> list[str]:
    """The servers' CPU over phase 2: where the rest of the machine's time went."""
    cpu = result.get("servers_cpu_seconds")
    if not cpu:
        return []
    return ["  servers CPU      " + ", ".join(f"{name} {seconds} s" for name, seconds in
                                              cpu.items())]


def _replicas_line(result: dict[str, Any]) -> list[str]:
    """With replicas: the messages each was sent (all phases), its own and others'."""
    replicas = result.get("replica_messages") or []
    if len(replicas) < 2:
        return []
    return ["  per replica      " + ", ".join(
        f"{r['own']:,.0f} own + {r['other_partition']:,.0f} other" for r in replicas)]


def _backlog_line(result: dict[str, Any]) -> list[str]:
    """--pipeline: each consumer group's stream backlog over phase 2, and its drain."""
    backlog = result.get("consumers_backlog")
    if not backlog:
        return []
    drained = backlog["drained_after_s"]
    return ["  stream backlog   " + ", ".join(
        f"{group} largest {n:,}, at end {backlog['at_end'].get(group, 0):,}"
        for group, n in backlog["largest"].items())
        + ("; not drained in 300 s" if drained is None else f"; drained {drained} s after")]


def _rejects_line(result: dict[str, Any]) -> list[str]:
    rejects = result.get("rejects") or {}
    if not rejects:
        return []
    return ["  rejected         " + ", ".join(f"{reason} {n}" for reason, n in rejects.items())]
