"""The soak's checks at the end: waiting for the pipeline to catch up, then what every
acknowledged reading, alert and diagnosis became, and the report."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import redis.asyncio as redis

from devtools.bench.soak_wells import Fleet
from shared.streams import DIAGNOSTICS as DIAGNOSTICS_STREAM
from shared.streams import TELEMETRY, group_backlog


async def caught_up(dsn: str, redis_url: str, timeout: float) -> dict[str, Any]:
    """Wait until the stored rows stop growing (the broker's queue for the ingestor is
    drained), every stream group has read and acknowledged everything and both outboxes
    are empty. Returns how long it took, or what was still busy at the timeout."""
    started = time.monotonic()
    client = redis.Redis.from_url(redis_url)
    rows, busy = -1, dict[str, object]()
    try:
        while time.monotonic() - started < timeout:
            await asyncio.sleep(2.0)
            try:
                busy = dict[str, object]()
                for stream in (TELEMETRY, DIAGNOSTICS_STREAM):
                    for group, (unread, pending) in (await group_backlog(client, stream)).items():
                        if unread or pending:
                            busy[f"{stream}/{group}"] = {"unread": unread, "pending": pending}
                conn = await asyncpg.connect(dsn)
                try:
                    for table in ("diagnoses", "alert_events"):
                        if n := await conn.fetchval(
                                f"SELECT count(*) FROM {table} WHERE published_at IS NULL"):
                            busy[f"{table} unpublished"] = n
                    before, rows = rows, await conn.fetchval("SELECT count(*) FROM telemetry")
                finally:
                    await conn.close()
                if rows != before:
                    busy["telemetry rows growing"] = rows
            except (OSError, redis.RedisError, asyncpg.PostgresError) as exc:
                busy = {"unreachable": str(exc)}
            if not busy:
                return {"seconds": round(time.monotonic() - started, 1)}
    finally:
        await client.aclose()
    return {"seconds": None, "still_busy": busy}


async def check_data(dsn: str, fleet: Fleet, received: list[int]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        stored_rows = await conn.fetch(
            "SELECT d.device_id, t.time FROM (SELECT DISTINCT device, time FROM telemetry) t "
            "JOIN devices d ON d.id = t.device")
        stored = {(r["device_id"], r["time"]) for r in stored_rows}
        duplicate_rows = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT (device, metric, time)) FROM telemetry")
        overlapping = await conn.fetchval(
            """
            SELECT count(*) FROM alerts a JOIN alerts b
              ON a.rule_id = b.rule_id AND a.device_id = b.device_id AND a.id < b.id
             WHERE a.resolved_at IS NULL OR a.resolved_at > b.active_since
            """)
        fired_twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT alert_id FROM alert_events WHERE kind = 'firing' "
            "GROUP BY alert_id HAVING count(*) > 1) x")
        announced = [r["id"] for r in await conn.fetch(
            "SELECT id FROM alert_events WHERE kind <> 'pending'")]
        alerts = await conn.fetchval("SELECT count(*) FROM alerts")
        diagnoses_twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM diagnoses GROUP BY device_id, code, "
            "coalesce(metric, ''), ts, cleared, severity HAVING count(*) > 1) x")
        diagnosed = {(r["device_id"], r["code"]) for r in await conn.fetch(
            "SELECT DISTINCT device_id, code FROM diagnoses WHERE NOT cleared")}
    finally:
        await conn.close()
    counts = Counter(received)
    lost = fleet.acked - stored
    return {
        "acked_not_stored_by_second": {str(k): v for k, v in sorted(Counter(
            int(ts.timestamp() - fleet.started) for _, ts in lost).items())},
        "acked_not_stored_devices": len({d for d, _ in lost}),
        "readings_sent": len(fleet.sent), "readings_acked": len(fleet.acked),
        "acked_not_stored": len(fleet.acked - stored),
        "stored_never_sent": len(stored - fleet.sent),
        "duplicate_telemetry_rows": duplicate_rows,
        "device_reconnects": sum(fleet.reconnects.values()),
        "device_reconnect_errors": dict(fleet.reconnects.most_common(5)),
        "alerts": alerts, "alert_events_announced": len(announced),
        "alerts_open_twice": overlapping, "alerts_fired_twice": fired_twice,
        "alert_events_not_received": len(set(announced) - set(counts)),
        "alert_events_received_twice": sum(1 for n in counts.values() if n > 1),
        "diagnosis_events_written_twice": diagnoses_twice,
        "diagnosed": sorted(diagnosed),
    }


def problems(result: dict[str, Any]) -> list[str]:
    """What breaks a guarantee (a repeat across a kill -9 is at-least-once, not one)."""
    data = result["data"]
    found = [f"{name}: {data[name]}" for name in (
        "acked_not_stored", "stored_never_sent", "duplicate_telemetry_rows",
        "alerts_open_twice", "alerts_fired_twice", "alert_events_not_received",
        "diagnosis_events_written_twice") if data[name]]
    found += [f"unexpected exit: {x}" for x in result["unexpected_exits"]]
    if result["settle"]["seconds"] is None:
        found.append(f"did not catch up: {result['settle']['still_busy']}")
    return found


def report(result: dict[str, Any]) -> str:
    d = result["data"]
    lines = [
        f"soak: {result['config']['minutes']:g} min, {len(result['events'])} reliability "
        f"events ({', '.join(e['event'] for e in result['events'])})",
        f"  readings: {d['readings_acked']:,} acked by the broker, {d['acked_not_stored']} "
        f"of them not stored, {d['duplicate_telemetry_rows']} duplicate rows, "
        f"{d['stored_never_sent']} stored that were never sent; "
        f"{d['device_reconnects']} device reconnects",
        f"  alerts: {d['alerts']} raised, {d['alerts_open_twice']} open twice, "
        f"{d['alerts_fired_twice']} fired twice; {d['alert_events_announced']} events, "
        f"{d['alert_events_not_received']} not received, {d['alert_events_received_twice']} "
        f"received twice (at-least-once across kills)",
        f"  diagnoses: {d['diagnosis_events_written_twice']} written twice; faults diagnosed "
        f"{result['faults_diagnosed']} of {len(result['faults'])}",
        f"  services: {result['kills']} killed by the soak, "
        f"{len(result['unexpected_exits'])} exited on their own; caught up "
        f"{result['settle']['seconds']} s after publishing stopped",
    ]
    for name, m in result["memory"].items():
        lines.append(f"  memory {name}: {m['rss_after_warm_up_mb']} MB after warm-up, "
                     f"{m['rss_at_end_mb']} MB after {m['minutes_alive']} min "
                     f"({m['growth_mb']:+} MB, {m['growth_percent']:+}%)")
    lines.append("  PROBLEMS: " + "; ".join(result["problems"]) if result["problems"]
                 else "  no guarantee broken")
    return "\n".join(lines)
