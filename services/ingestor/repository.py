"""Database writes of the ingestor: catalog ids, device units, telemetry rows, latest values,
devices, rejects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import NamedTuple

import asyncpg
import structlog

from services.ingestor import copy_binary
from services.ingestor.batch import Reject
from shared.units import CANONICAL, Conversion, UnitError, conversion

log = structlog.get_logger(__name__)

TELEMETRY_COLUMNS = ("time", "device", "metric", "value", "quality")
REJECT_COLUMNS = ("topic", "device_id", "reason", "detail", "payload", "payload_size",
                  "message_count")

# Built per value or per message in the mapping's hot loop: plain tuples, read by unpacking
# into names. As NamedTuples (a Python-level constructor, no tuple free list, none of the
# interpreter's tuple fast paths) they cost map_batch more than its 3 % budget: LatestRow
# ~30 %, Seen ~4 % (500 messages of 10 values).
# Rows of TELEMETRY_COLUMNS (time, device, metric, value, quality), handed to COPY.
NumberRow = tuple[datetime, int, int, float, int | None]
TextRow = tuple[datetime, int, int, str, int | None]
# A row of telemetry_latest: device, metric, time, value, text, quality.
LatestRow = tuple[int, int, datetime, float | None, str | None, int | None]
# A device's telemetry in a batch: (last_seen, online), its latest receive time, and
# whether that telemetry came after any status message of the batch (then it marks the
# device online).
Seen = tuple[datetime, bool]


class UnitRow(NamedTuple):
    """A row of device_units: the unit a device now gives a metric in, as it spelled it."""

    device: int
    metric: int
    unit: str


class KnownUnit(NamedTuple):
    """A device's unit for a metric, and its conversion to the canonical unit."""

    unit: str
    conversion: Conversion


class StatusRow(NamedTuple):
    """An explicit status message (or Last Will) of a device, and what sent it (a
    device_connections source: device, gateway or sparkplug)."""

    device: int
    online: bool
    ts: datetime
    source: str = "device"


class Catalog:
    """Name → id caches for devices and metrics; misses are resolved in one query per batch."""

    def __init__(self) -> None:
        self.devices: dict[str, int] = {}
        self.metrics: dict[str, int] = {}
        self.kinds: dict[str, str | None] = {}  # 'number' or 'text' (metrics.kind)

    async def resolve_devices(self, conn: asyncpg.Connection, names: Iterable[str],
                              create: bool) -> dict[str, int]:
        missing = sorted({n for n in names if n not in self.devices})
        if missing:
            if create:
                await conn.execute(
                    "INSERT INTO devices (device_id) SELECT unnest($1::text[]) "
                    "ON CONFLICT (device_id) DO NOTHING", missing)
            rows = await conn.fetch(
                "SELECT device_id, id FROM devices WHERE device_id = any($1::text[])", missing)
            self.devices.update((r["device_id"], r["id"]) for r in rows)
        return self.devices

    async def resolve_metrics(self, conn: asyncpg.Connection, units: dict[str, str | None],
                              first_kinds: dict[str, str]) -> dict[str, int]:
        """Ids of the metrics named in `units` (name → first unit given in the batch); a new
        one is catalogued with its canonical unit if it is a known metric, else that unit,
        and with the kind of its first value in `first_kinds` (a known metric: a number).
        `kinds` then holds what each metric is, as the catalog says."""
        missing = sorted(n for n in units if n not in self.metrics or self.kinds.get(n) is None)
        if missing:
            kinds = ["number" if n in CANONICAL else first_kinds[n] for n in missing]
            # NOT EXISTS first: ON CONFLICT alone burns an id of the smallint sequence
            # for every name already there.
            await conn.execute(
                "INSERT INTO metrics (name, unit, kind) SELECT t.name, t.unit, t.kind "
                "FROM unnest($1::text[], $2::text[], $3::text[]) AS t(name, unit, kind) "
                "WHERE NOT EXISTS (SELECT 1 FROM metrics m WHERE m.name = t.name) "
                "ON CONFLICT (name) DO NOTHING", missing,
                [CANONICAL.get(n) or units[n] for n in missing], kinds)
            # A metric catalogued before it had a value learns its kind now.
            rows = await conn.fetch(
                "UPDATE metrics AS m SET kind = t.kind "
                "FROM unnest($1::text[], $2::text[]) AS t(name, kind) "
                "WHERE m.name = t.name AND m.kind IS NULL RETURNING m.name, m.id, m.kind",
                missing, kinds)
            rows += await conn.fetch(
                "SELECT name, id, kind FROM metrics WHERE name = any($1::text[])",
                [n for n in missing if n not in {r["name"] for r in rows}])
            for r in rows:
                self.metrics[r["name"]] = r["id"]
                self.kinds[r["name"]] = r["kind"]
        return self.metrics


class DeviceUnits:
    """The unit each device last gave per metric, with its conversion to the canonical
    unit (the identity for a metric without one): device id → metric name → (unit,
    conversion).

    Loaded from `device_units` the first time a batch holds the device (one query per
    batch for all such devices), then kept current from what this ingestor commits: a
    device's messages are only ever stored by one replica (its partition).
    """

    def __init__(self) -> None:
        self.known: dict[int, dict[str, KnownUnit]] = {}  # only devices that have units
        self.loaded: set[int] = set()

    async def load(self, conn: asyncpg.Connection,
                   devices: Iterable[int]) -> dict[int, dict[str, KnownUnit]]:
        missing = sorted({d for d in devices if d not in self.loaded})
        if missing:
            rows = await conn.fetch(
                "SELECT u.device, m.name, u.unit FROM device_units u "
                "JOIN metrics m ON m.id = u.metric WHERE u.device = any($1::int[])", missing)
            for r in rows:
                try:  # a unit a later contract no longer accepts is forgotten, not fatal
                    conv = conversion(r["name"], r["unit"])
                except UnitError as exc:
                    log.warning("stored device unit no longer converts; ignored",
                                device=r["device"], metric=r["name"], unit=r["unit"],
                                error=str(exc))
                    continue
                self.known.setdefault(r["device"], {})[r["name"]] = KnownUnit(r["unit"], conv)
            self.loaded.update(missing)
        return self.known

    def remember(self, changed: dict[int, dict[str, KnownUnit]]) -> None:
        """After commit: each device's whole new mapping, as map_batch made it."""
        self.known.update(changed)


@dataclass(slots=True)
class Written:
    telemetry_rows: int = 0
    text_rows: int = 0
    duplicate_rows: int = 0


COPY_CHUNK = 1 << 20


async def _chunks(data: bytes) -> AsyncIterator[memoryview]:
    """`data` as COPY messages of at most a MiB: asyncpg copies each chunk into its write
    buffer, and PostgreSQL refuses a message over 1 GB."""
    view = memoryview(data)
    for start in range(0, len(view), COPY_CHUNK):
        yield view[start:start + COPY_CHUNK]


async def _copy(conn: asyncpg.Connection, table: str, rows: Sequence[tuple], data: bytes,
                value_type: str, redelivered: bool) -> int:
    """COPY `rows` (`data`: as copy_binary wrote them) into `table`; returns the rows
    inserted. `redelivered`: some may be stored already, so they go through a staging
    table and only the new ones are inserted."""
    if not rows:
        return 0
    if not redelivered:
        await conn.copy_to_table(table, source=_chunks(data), columns=TELEMETRY_COLUMNS,
                                 format="binary")
        return len(rows)
    staging = f"_staging_{table}"
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {staging} (time timestamptz, device int, "
        f"metric smallint, value {value_type}, quality smallint) ON COMMIT DELETE ROWS")
    await conn.copy_to_table(staging, source=_chunks(data), columns=TELEMETRY_COLUMNS,
                             format="binary")
    status = await conn.execute(
        f"INSERT INTO {table} (time, device, metric, value, quality) "
        f"SELECT time, device, metric, value, quality FROM {staging} "
        "ON CONFLICT (device, metric, time) DO NOTHING")
    await conn.execute(f"TRUNCATE {staging}")
    return int(status.rsplit(" ", 1)[1])


async def write_batch(conn: asyncpg.Connection, numbers: Sequence[NumberRow],
                      texts: Sequence[TextRow], latest: Sequence[LatestRow],
                      seen: dict[int, Seen], statuses: Sequence[StatusRow],
                      rejects: Sequence[Reject], units: Sequence[UnitRow] = ()) -> Written:
    """Everything of one batch in one transaction; the caller acks after it returns.

    The rows are copied straight in. If any is stored already (a redelivery), the
    transaction rolls back and runs again through staging tables, which insert only what
    is new: rare, where a savepoint around each COPY cost every batch two round trips."""
    encoded = copy_binary.numbers(numbers), copy_binary.texts(texts)
    write = partial(_write, conn, numbers, texts, encoded, latest, seen, statuses, rejects,
                    units)
    try:
        return await write(redelivered=False)
    except asyncpg.UniqueViolationError:
        return await write(redelivered=True)


async def _write(conn: asyncpg.Connection, numbers: Sequence[NumberRow],
                 texts: Sequence[TextRow], encoded: tuple[bytes, bytes],
                 latest: Sequence[LatestRow], seen: dict[int, Seen],
                 statuses: Sequence[StatusRow], rejects: Sequence[Reject],
                 units: Sequence[UnitRow], redelivered: bool) -> Written:
    written = Written()
    async with conn.transaction():
        written.telemetry_rows = await _copy(conn, "telemetry", numbers, encoded[0],
                                             "double precision", redelivered)
        written.text_rows = await _copy(conn, "telemetry_text", texts, encoded[1], "text",
                                        redelivered)
        written.duplicate_rows = len(numbers) + len(texts) - written.telemetry_rows \
            - written.text_rows
        devices = sorted({*seen, *(s.device for s in statuses)})
        if devices:
            # Device rows first and in id order, so replicas writing the same devices queue
            # behind each other instead of deadlocking. NO KEY UPDATE is the lock the
            # UPDATEs below take anyway: it leaves other services' foreign keys to the
            # device (their key-share locks, taken in their own order) unblocked.
            await conn.execute("SELECT 1 FROM devices WHERE id = any($1::int[]) ORDER BY id "
                               "FOR NO KEY UPDATE", devices)
        if latest:
            await upsert_latest(conn, latest)
        if units:
            await upsert_units(conn, units)
        for status in statuses:  # before telemetry, which may come after them
            await set_status(conn, status.device, status.online, status.ts, status.source)
        if seen:
            await mark_seen(conn, seen)
        if rejects:
            await record_rejects(conn, rejects)
    return written


def _device_metric(row: LatestRow) -> tuple[int, int]:
    device, metric, _time, _value, _text, _quality = row
    return device, metric


async def upsert_latest(conn: asyncpg.Connection, rows: Sequence[LatestRow]) -> None:
    """Latest value per (device, metric) by event time: a late reading never wins."""
    ordered = sorted(rows, key=_device_metric)  # one lock order across replicas
    await conn.execute(
        """
        INSERT INTO telemetry_latest AS l (device, metric, time, value, value_text, quality)
        SELECT * FROM unnest($1::int[], $2::smallint[], $3::timestamptz[], $4::float8[],
                             $5::text[], $6::smallint[])
        ON CONFLICT (device, metric) DO UPDATE
           SET time = excluded.time, value = excluded.value,
               value_text = excluded.value_text, quality = excluded.quality
         WHERE excluded.time > l.time
        """, *zip(*ordered, strict=True))


async def upsert_units(conn: asyncpg.Connection, rows: Sequence[UnitRow]) -> None:
    """The unit each device now gives per metric (only changes reach here)."""
    ordered = sorted(rows)  # one lock order across replicas
    await conn.execute(
        """
        INSERT INTO device_units AS u (device, metric, unit)
        SELECT * FROM unnest($1::int[], $2::smallint[], $3::text[])
        ON CONFLICT (device, metric) DO UPDATE SET unit = excluded.unit, updated_at = now()
         WHERE u.unit IS DISTINCT FROM excluded.unit
        """, *zip(*ordered, strict=True))


# Each device's newest rows kept in device_connections (migration 0016): a device that
# flaps for days holds no more, a quiet one keeps its history.
CONNECTIONS_KEPT = 500

# A device's rows past the newest CONNECTIONS_KEPT ($2), for the devices in $1: one index
# probe per device whose status just changed (rare: only actual changes get here).
PRUNE_CONNECTIONS = """
    DELETE FROM device_connections AS c
     USING (SELECT d.id, (SELECT k.id FROM device_connections k WHERE k.device = d.id
                           ORDER BY k.id DESC OFFSET $2 LIMIT 1) AS cut
              FROM unnest($1::int[]) AS d(id)) AS p
     WHERE c.device = p.id AND c.id <= p.cut"""


async def mark_seen(conn: asyncpg.Connection, seen: dict[int, Seen]) -> None:
    """Telemetry means the device is alive: last_seen forward and, unless a status message
    came after it in the batch, status online (a change recorded in device_connections).
    The devices' rows are locked by write_batch, so `before` is their status now."""
    ids = sorted(seen)
    in_order = [seen[i] for i in ids]
    changed = await conn.fetch(
        """
        WITH v AS (SELECT * FROM unnest($1::int[], $2::timestamptz[], $3::bool[])
                                 AS v(id, seen, online)),
             before AS (SELECT d.id, d.status FROM devices d JOIN v ON v.id = d.id),
             updated AS (
        UPDATE devices AS d
           SET last_seen = GREATEST(d.last_seen, v.seen),
               status = CASE WHEN v.online THEN 'online' ELSE d.status END,
               status_changed_at = CASE WHEN v.online AND d.status <> 'online' THEN v.seen
                                        ELSE d.status_changed_at END,
               updated_at = now()
          FROM v
         WHERE d.id = v.id
           AND (d.last_seen IS NULL OR d.last_seen < v.seen
                OR (v.online AND d.status <> 'online'))
        RETURNING d.id, d.status, d.status_changed_at)
        INSERT INTO device_connections (device, ts, status, previous, source)
        SELECT u.id, u.status_changed_at, u.status, b.status, 'telemetry'
          FROM updated u JOIN before b ON b.id = u.id
         WHERE u.status IS DISTINCT FROM b.status
        RETURNING device
        """, ids, [last_seen for last_seen, _ in in_order], [online for _, online in in_order])
    await prune_connections(conn, [r["device"] for r in changed])


async def set_status(conn: asyncpg.Connection, device: int, online: bool, ts: datetime,
                     source: str = "device") -> None:
    """An explicit status message (or Last Will); an older one never overrides a newer one.
    An actual change is recorded in device_connections (the row is locked by write_batch,
    so `before` is its status now)."""
    changed = await conn.fetch(
        """
        WITH before AS (SELECT status FROM devices WHERE id = $1),
             updated AS (
        UPDATE devices SET status = $2, status_changed_at = $3, updated_at = now(),
               last_seen = CASE WHEN $2 = 'online' THEN GREATEST(last_seen, $3) ELSE last_seen END
         WHERE id = $1 AND (status_changed_at IS NULL OR status_changed_at <= $3)
        RETURNING status)
        INSERT INTO device_connections (device, ts, status, previous, source)
        SELECT $1, $3, u.status, b.status, $4 FROM updated u, before b
         WHERE u.status IS DISTINCT FROM b.status
        RETURNING device
        """, device, "online" if online else "offline", ts, source)
    await prune_connections(conn, [r["device"] for r in changed])


async def prune_connections(conn: asyncpg.Connection, devices: Sequence[int]) -> None:
    """Keep each of `devices`' newest CONNECTIONS_KEPT status changes."""
    if devices:
        await conn.execute(PRUNE_CONNECTIONS, sorted(set(devices)), CONNECTIONS_KEPT)


async def record_rejects(conn: asyncpg.Connection, rejects: Sequence[Reject]) -> None:
    await conn.copy_records_to_table(
        "rejected_messages", columns=REJECT_COLUMNS,
        records=[(r.topic, r.device_id, r.reason, r.detail, r.payload, r.payload_size,
                  r.count) for r in rejects])


async def mark_inactive_offline(conn: asyncpg.Connection, after_seconds: float) -> list[str]:
    """Devices silent for longer than the timeout go offline (each change recorded in
    device_connections, in the same statement); returns their ids."""
    async with conn.transaction():
        rows = await conn.fetch(
            """
            WITH gone AS (
                UPDATE devices SET status = 'offline', status_changed_at = now(),
                       updated_at = now()
                 WHERE status = 'online' AND last_seen < now() - make_interval(secs => $1)
                RETURNING id, device_id, status_changed_at),
                 logged AS (
                INSERT INTO device_connections (device, ts, status, previous, source)
                SELECT id, status_changed_at, 'offline', 'online', 'timeout' FROM gone)
            SELECT id, device_id FROM gone
            """, after_seconds)
        await prune_connections(conn, [r["id"] for r in rows])
    return [r["device_id"] for r in rows]
