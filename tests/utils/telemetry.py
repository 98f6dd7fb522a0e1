"""Stored telemetry written straight into a test database, as the ingestor would store it:
the device and metrics catalogued, numbers in `telemetry`, text in `telemetry_text`, and
`telemetry_latest` kept by event time."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg
import orjson

Row = tuple[datetime, str, float | str]


async def seed(dsn: str, device_id: str, rows: Iterable[Row], *, device_type: str = "esp",
               tags: list[str] | None = None, status: str = "unknown") -> None:
    rows = list(rows)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            device = await conn.fetchval(
                "INSERT INTO devices (device_id, device_type, metadata, status) "
                "VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (device_id) DO UPDATE "
                "SET status = excluded.status RETURNING id",
                device_id, device_type, orjson.dumps({"tags": tags or []}).decode(), status)
            names = sorted({name for _, name, _ in rows})
            await conn.executemany("INSERT INTO metrics (name) VALUES ($1) "
                                   "ON CONFLICT (name) DO NOTHING", [(n,) for n in names])
            ids = dict(await conn.fetch("SELECT name, id FROM metrics WHERE name = ANY($1)",
                                        names))
            numbers = [(t, device, ids[n], float(v)) for t, n, v in rows
                       if not isinstance(v, str)]
            texts = [(t, device, ids[n], v) for t, n, v in rows if isinstance(v, str)]
            if numbers:
                await conn.copy_records_to_table("telemetry", records=numbers,
                                                 columns=["time", "device", "metric", "value"])
            if texts:
                await conn.copy_records_to_table("telemetry_text", records=texts,
                                                 columns=["time", "device", "metric", "value"])
            newest: dict[str, Row] = {}
            for row in rows:
                if row[1] not in newest or row[0] > newest[row[1]][0]:
                    newest[row[1]] = row
            await conn.executemany(
                "INSERT INTO telemetry_latest AS l (device, metric, time, value, value_text) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device, metric) DO UPDATE "
                "SET time = excluded.time, value = excluded.value, "
                "value_text = excluded.value_text WHERE excluded.time > l.time",
                [(device, ids[n], t, None if isinstance(v, str) else float(v),
                  v if isinstance(v, str) else None) for t, n, v in newest.values()])
    finally:
        await conn.close()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def params(**values: Any) -> dict[str, Any]:
    """Query parameters with datetimes as ISO text."""
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in values.items()
            if v is not None}
