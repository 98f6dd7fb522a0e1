"""Database side of diagnosis: events and open diagnoses, per-device progress, the replay
that rebuilds the engine after a restart, limits, the outbox. The diagnostics service
writes through it; the API reads the limits (`load_limits`) for its dry run and
(`limit_book`) for the wells' health scores."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import structlog

from shared.diagnosis.catalog import action_for
from shared.diagnosis.events import DiagnosisEvent, Reading
from shared.diagnosis.limits import DEFAULT_LIMITS, LimitBook, check_shape
from shared.units import CANONICAL

log = structlog.get_logger(__name__)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def commit(conn: asyncpg.Connection, events: list[DiagnosisEvent],
                 progress: dict[str, float]) -> list[int]:
    """Record the events and move each device's progress past the readings judged, in one
    transaction: a crash before it leaves both as they were, so nothing is emitted twice."""
    async with conn.transaction():
        ids: list[int] = []
        for event in events:  # few: only raises, changes and clears
            diagnosis_id = await conn.fetchval(
                """
                INSERT INTO diagnoses (device_id, ts, code, metric, severity, cleared,
                                       confidence, evidence, action)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id
                """, event.device_id, _at(event.ts), event.code, event.metric, event.severity,
                event.cleared, event.confidence, event.evidence,
                action_for(event.code, event.severity))
            ids.append(diagnosis_id)
            if event.cleared:
                await conn.execute(
                    "DELETE FROM open_diagnoses WHERE device_id = $1 AND code = $2 "
                    "AND metric = $3", event.device_id, event.code, event.metric or "")
            else:
                await conn.execute(
                    """
                    INSERT INTO open_diagnoses (device_id, code, metric, severity, confidence,
                                                evidence, since, diagnosis_id)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (device_id, code, metric) DO UPDATE
                    SET severity = EXCLUDED.severity, confidence = EXCLUDED.confidence,
                        evidence = EXCLUDED.evidence, diagnosis_id = EXCLUDED.diagnosis_id
                    """, event.device_id, event.code, event.metric or "", event.severity,
                    event.confidence, event.evidence, _at(event.ts), diagnosis_id)
        if progress:
            await conn.execute(
                """
                INSERT INTO diagnostics_progress (device_id, last_ts)
                SELECT p.device_id, p.last_ts
                FROM unnest($1::text[], $2::timestamptz[]) AS p(device_id, last_ts)
                JOIN devices d ON d.device_id = p.device_id
                ON CONFLICT (device_id) DO UPDATE
                SET last_ts = greatest(diagnostics_progress.last_ts, EXCLUDED.last_ts)
                """, list(progress), [_at(ts) for ts in progress.values()])
    return ids


@dataclass(slots=True)
class History:
    """What the engine needs to continue judging a device after a restart."""

    readings: list[Reading]
    open: list[asyncpg.Record]


async def history(conn: asyncpg.Connection, device_ids: list[str],
                  readings_per_metric: int) -> dict[str, History]:
    """The last readings judged (up to each device's progress) and the open diagnoses."""
    rows = await conn.fetch(
        """
        SELECT d.device_id, t.time, m.name, t.value
        FROM devices d
        JOIN diagnostics_progress p ON p.device_id = d.device_id
        CROSS JOIN metrics m
        CROSS JOIN LATERAL (
            SELECT time, value FROM telemetry
            WHERE device = d.id AND metric = m.id AND time <= p.last_ts
            ORDER BY time DESC LIMIT $2) t
        WHERE d.device_id = any($1::text[]) AND m.name = any($3::text[])
        """, device_ids, readings_per_metric, list(CANONICAL)) if readings_per_metric else []
    by_time: dict[str, dict[datetime, dict[str, float]]] = defaultdict(dict)
    for row in rows:
        by_time[row["device_id"]].setdefault(row["time"], {})[row["name"]] = row["value"]
    open_rows = await conn.fetch(
        "SELECT * FROM open_diagnoses WHERE device_id = any($1::text[])", device_ids)
    result = {d: History([], []) for d in device_ids}
    for device_id, readings in by_time.items():
        result[device_id].readings = [Reading(device_id, ts.timestamp(), values)
                                      for ts, values in sorted(readings.items())]
    for row in open_rows:
        result[row["device_id"]].open.append(row)
    return result


class Judging(NamedTuple):
    """What the engine judges devices by, besides their readings."""

    limits: LimitBook
    device_types: dict[str, str]
    equipment: dict[str, dict[str, float]]  # devices.metadata.attributes, where set


async def limit_book(conn: asyncpg.Connection | asyncpg.Pool) -> LimitBook:
    """The limits with the `diagnosis_limits` overrides: `for_device` gives a device's
    effective ones, as the engine judges it. A row that does not fit the limits' shape is
    left out with an error logged, so one bad row never stops judging."""
    overrides: dict[str, Any] = {"defaults": {}, "device_types": {}, "devices": {}}
    for row in await conn.fetch(
            "SELECT id, device_type, device_id, limits FROM diagnosis_limits ORDER BY id"):
        scope, name = (("devices", row["device_id"]) if row["device_id"] is not None else
                       ("device_types", row["device_type"]) if row["device_type"] is not None
                       else ("defaults", None))
        try:
            check_shape(row["limits"], DEFAULT_LIMITS, f"diagnosis_limits[{row['id']}]")
        except ValueError as exc:
            log.error("diagnosis limits row ignored", error=str(exc))
            continue
        if name is None:
            overrides["defaults"] = row["limits"]
        else:
            overrides[scope][name] = row["limits"]
    return LimitBook(overrides)


async def load_limits(conn: asyncpg.Connection) -> Judging:
    """The limits (`limit_book`), and every device's type and equipment."""
    limits = await limit_book(conn)
    devices = await conn.fetch(
        "SELECT device_id, device_type, metadata -> 'attributes' AS attributes FROM devices")
    return Judging(limits, {r["device_id"]: r["device_type"] for r in devices},
                   {r["device_id"]: r["attributes"] for r in devices if r["attributes"]})


async def unpublished(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, device_id, ts, code, metric, severity, cleared, confidence, evidence, "
        "action FROM diagnoses WHERE published_at IS NULL ORDER BY id LIMIT $1", limit)


async def mark_published(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("UPDATE diagnoses SET published_at = now() WHERE id = any($1::bigint[])",
                       ids)
