"""`insa bench ingest`'s checks afterwards: what reached the stream and the database,
lost and duplicated readings, and rejects (none expected)."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis


def check_stream(redis_url: str, credentials: dict[str, str], per_device: int
                 ) -> tuple[list[float], int, int]:
    """For these devices: latencies (ms, stream entry time minus reading ts), lost and
    duplicated (device, seq)."""
    return check_readings(redis_url, {d: per_device for d in credentials})


def check_readings(redis_url: str, expected: dict[str, int], by_seq: bool = True
                   ) -> tuple[list[float], int, int]:
    """For these devices (each with its count of readings): latencies (ms, stream entry
    time minus reading ts), lost and duplicated readings. A reading is known by its
    (device, seq), seq 0 to count - 1; or, for readings without a seq (Sparkplug), by
    (device, ts), which the publisher keeps unique per device."""
    wanted = {d.encode() for d in expected}
    client = redis.Redis.from_url(redis_url)
    seen: dict[tuple[bytes, int], int] = {}
    latencies: list[float] = []
    last = "-"
    while True:
        chunk: list[Any] = client.xrange("insa:telemetry", min=last, count=10_000)  # type: ignore[assignment]
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            break
        for entry_id, fields in chunk:
            if fields[b"device_id"] not in wanted:
                continue
            key = (fields[b"device_id"], int(fields[b"seq"] if by_seq else fields[b"ts"]))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                latencies.append(int(entry_id.split(b"-")[0]) - int(fields[b"ts"]))
        last = chunk[-1][0].decode()
    if by_seq:
        wanted_keys = {(d.encode(), s) for d, n in expected.items() for s in range(n)}
        lost = len(wanted_keys - set(seen))
    else:
        distinct: dict[bytes, int] = {}
        for device, _ts in seen:
            distinct[device] = distinct.get(device, 0) + 1
        lost = sum(max(0, n - distinct.get(d.encode(), 0)) for d, n in expected.items())
    duplicated = sum(n - 1 for n in seen.values())
    return latencies, lost, duplicated


async def check_storage(dsn: str, total: int) -> tuple[int, int]:
    """Lost readings and duplicate rows in the database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (device, time)) FROM telemetry t "
            "JOIN metrics m ON m.id = t.metric WHERE m.name = 'flow_rate'")
    finally:
        await conn.close()
    return total - distinct, rows - distinct


async def count_rejects(dsn: str) -> dict[str, int]:
    """Rejected messages by reason (none expected)."""
    conn = await asyncpg.connect(dsn)
    try:
        return {r["reason"]: r["n"] for r in await conn.fetch(
            "SELECT reason, count(*) AS n FROM rejected_messages GROUP BY reason ORDER BY 1")}
    finally:
        await conn.close()
