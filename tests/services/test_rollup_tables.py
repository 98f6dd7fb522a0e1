"""The hourly rollup on plain PostgreSQL (migration 0017): a table kept by a trigger on
telemetry, read through the `telemetry_1h` view, always equal to the aggregate of the raw
rows: whatever the statement (COPY, INSERT, ON CONFLICT DO NOTHING), the order rows
arrive in, duplicates, late readings, rolled-back work and concurrent writers.

Every test here runs on a database whose migrations took the plain branch, even where the
test server preloads TimescaleDB (`db_url` below); the branch a real migration takes is
checked on its own (`test_each_branch_has_its_rollups`).
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from services.ingestor.repository import write_batch
from shared.migrate import DEFAULT_DIRECTORY, migrate
from shared.mqtt import telemetry_topic
from tests.utils.devices import LOAD_GENERATOR, connect_device
from tests.utils.waiting import wait_until

ORIGIN = "TIMESTAMPTZ '2000-01-03 00:00:00+00'"
# What the views of 0004 computed on every read: the reference the tables must equal.
RAW = """
    SELECT date_bin(INTERVAL '{width}', time, """ + ORIGIN + """) AS bucket, device, metric,
           avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
      FROM telemetry GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
ROLLUP = "SELECT bucket, device, metric, avg, min, max, count FROM {view} ORDER BY 1, 2, 3"
WIDTHS = (("1 hour", "telemetry_1h"),)  # telemetry_1m stays a view over the raw rows

# An hour of yesterday: inside any retention, and never "now" (no bucket still filling).
HOUR = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)

Row = tuple[datetime, int, int, float]


def at(minutes: float) -> datetime:
    return HOUR + timedelta(minutes=minutes)


def eighths(rng: random.Random) -> float:
    """A value whose sums are exact in any order (k/8, |k| < 2^20): then avg, too, must
    equal the raw rows' to the last bit, not merely be close."""
    return rng.randint(-(2**20), 2**20) / 8


# --- databases --------------------------------------------------------------------------------


def plain_migrations(tmp_path: Path) -> Path:
    """A copy of the migrations whose 0001 does not create TimescaleDB: the later ones then
    take their plain-PostgreSQL branch on any server."""
    directory = Path(shutil.copytree(DEFAULT_DIRECTORY, tmp_path / "migrations"))
    first = next(directory.glob("0001_*.sql"))
    first.write_text("-- plain PostgreSQL whatever the server preloads (tests)\nSELECT 1;\n")
    return directory


def set_aside(directory: Path, first: str) -> dict[Path, str]:
    """Remove the migrations from version `first` on; returns them to put back."""
    later = {p: p.read_text() for p in directory.glob("*.sql") if p.name >= first}
    for path in later:
        path.unlink()
    return later


def put_back(later: dict[Path, str]) -> None:
    for path, sql in later.items():
        path.write_text(sql)


@pytest.fixture
async def db_url(pg_dsn: str, tmp_path: Path) -> str:
    """This module's databases: every migration, plain PostgreSQL branch (overrides the
    shared fixture, so the ingestor fixtures use it too)."""
    await migrate(pg_dsn, plain_migrations(tmp_path))
    return pg_dsn


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


async def assert_rollups_equal_raw(conn: asyncpg.Connection, buckets: int = 1) -> None:
    """The rollup holds exactly the raw rows' aggregate, and not trivially: at least
    `buckets` (device, metric, hour) rows."""
    for width, view in WIDTHS:
        raw = [tuple(r) for r in await conn.fetch(RAW.format(width=width))]
        rolled = [tuple(r) for r in await conn.fetch(ROLLUP.format(view=view))]
        assert len(raw) >= buckets, view
        assert rolled == raw, view


async def copy(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    await conn.copy_records_to_table("telemetry", records=rows,
                                     columns=("time", "device", "metric", "value"))


INSERT = ("INSERT INTO telemetry (time, device, metric, value) "
          "SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::smallint[], $4::float8[])")


async def insert(conn: asyncpg.Connection, rows: Sequence[Row], on_conflict: str = "") -> str:
    return str(await conn.execute(INSERT + on_conflict, *zip(*rows, strict=True)))


# --- the branches -----------------------------------------------------------------------------


async def test_each_branch_has_its_rollups(pg_dsn: str) -> None:
    """The real migrations: a table and a trigger on plain PostgreSQL; on TimescaleDB 0017
    leaves the continuous aggregates of 0004 alone."""
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        timescaledb = await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')")
        tables = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = "
                                     "'telemetry_1h_data'")
        triggers = await conn.fetchval("SELECT count(*) FROM pg_trigger "
                                       "WHERE tgname = 'telemetry_rollup'")
        if timescaledb:
            assert (tables, triggers) == (0, 0)
            caggs = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.continuous_aggregates "
                "WHERE view_name IN ('telemetry_1m', 'telemetry_1h')")
            assert caggs == 2
        else:
            assert (tables, triggers) == (1, 1)
            kinds = await conn.fetch("SELECT relkind::text FROM pg_class "
                                     "WHERE relname IN ('telemetry_1m', 'telemetry_1h')")
            assert [r[0] for r in kinds] == ["v", "v"]  # over raw rows; over the table
    finally:
        await conn.close()


# --- direct SQL -------------------------------------------------------------------------------


async def test_hand_computed_buckets(conn: asyncpg.Connection) -> None:
    """The figures themselves, not only agreement with the raw rows."""
    await copy(conn, [(at(0.1), 1, 1, 1.0), (at(0.6), 1, 1, 3.0), (at(1.2), 1, 1, 5.0),
                      (at(0.3), 2, 1, 4.0)])
    await insert(conn, [(at(61), 1, 1, 7.0)])
    await insert(conn, [(at(0.9), 1, 1, -2.0)])  # late, into a filled hour
    hours = [tuple(r) for r in await conn.fetch(
        "SELECT bucket, device, avg, min, max, count FROM telemetry_1h ORDER BY 1, 2")]
    assert hours == [(HOUR, 1, 7 / 4, -2.0, 5.0, 4), (HOUR, 2, 4.0, 4.0, 4.0, 1),
                     (HOUR + timedelta(hours=1), 1, 7.0, 7.0, 7.0, 1)]
    await assert_rollups_equal_raw(conn)


async def test_every_way_of_writing_matches_the_raw_rows(conn: asyncpg.Connection) -> None:
    rng = random.Random(14)
    keys = [(at(rng.uniform(0, 180)), rng.randint(1, 4), rng.randint(1, 3))
            for _ in range(3000)]
    rows = [(t, d, m, eighths(rng)) for t, d, m in dict.fromkeys(keys)]
    first, second, third, late = rows[:1000], rows[1000:1800], rows[1800:2600], rows[2600:]

    await copy(conn, first)  # the ingestor's fast path
    await insert(conn, second)
    for row in third[:50]:  # one row a statement
        await insert(conn, [row])
    async with conn.transaction():  # several statements, one transaction
        await insert(conn, third[50:400])
        await copy(conn, third[400:])
    # Rolled back: neither the raw rows nor their rollup.
    fresh = [(at(200 + i), 9, 1, 1.0) for i in range(20)]
    with pytest.raises(asyncpg.UniqueViolationError):
        async with conn.transaction():
            await copy(conn, fresh)
            await copy(conn, first[:5])
    assert await conn.fetchval("SELECT count(*) FROM telemetry_1h WHERE device = 9") == 0
    # A redelivery: half old rows, half new; ON CONFLICT DO NOTHING stores the new half.
    mixed = first[:200] + late[:200]
    assert await insert(conn, mixed, " ON CONFLICT (device, metric, time) DO NOTHING") \
        == "INSERT 0 200"
    # Late readings: back into buckets that already have rows, newest first.
    await copy(conn, sorted(late[200:], reverse=True))

    await assert_rollups_equal_raw(conn, buckets=30)
    assert await conn.fetchval("SELECT sum(count) FROM telemetry_1h") == len(rows)


async def test_the_ingestors_write_counts_a_redelivery_once(conn: asyncpg.Connection) -> None:
    """services/ingestor/repository.py's write: COPY straight in; on a duplicate key, the
    transaction rolled back and the batch again through a staging table with ON CONFLICT
    DO NOTHING."""
    rng = random.Random(3)
    batch = [(at(i / 7), 1 + i % 3, 1 + i % 2, eighths(rng), None) for i in range(700)]

    async def write(rows: list[tuple[datetime, int, int, float, None]]) -> tuple[int, int]:
        written = await write_batch(conn, rows, [], [], {}, [], [])
        return written.telemetry_rows, written.duplicate_rows

    assert await write(batch[:500]) == (500, 0)
    assert await write(batch) == (200, 500)  # delivered again, with 200 new readings
    assert await write(batch) == (0, 700)  # and again, nothing new
    await assert_rollups_equal_raw(conn, buckets=6)
    assert await conn.fetchval("SELECT sum(count) FROM telemetry_1h") == 700


async def test_concurrent_writers_neither_deadlock_nor_miscount(db_url: str,
                                                                conn: asyncpg.Connection
                                                                ) -> None:
    """Eight connections writing into the same buckets at once, each transaction held open
    a moment after its rows (so the next writer waits on its rollup rows), some of them
    delivering rows another writer also delivers."""
    writers, rounds = 8, 12
    rng = random.Random(8)
    # Each round's batch: every writer its own readings (distinct microseconds) in the same
    # few minutes of the same series, and a share of a pool every writer also sends.
    shared = [(at(rng.uniform(0, 5)), rng.randint(1, 3), rng.randint(1, 2), eighths(rng))
              for _ in range(300)]
    sent: set[tuple[datetime, int, int]] = set()

    def batch(writer: int) -> list[Row]:
        own = [(at(rng.uniform(0, 5)) + timedelta(microseconds=writer), rng.randint(1, 3),
                rng.randint(1, 2), eighths(rng)) for _ in range(150)]
        # In key order, as one replica writes its devices: writers inserting the same raw
        # keys in different orders would deadlock on telemetry's own unique index.
        return sorted(own + rng.sample(shared, 40), key=lambda r: (r[1], r[2], r[0]))

    async def write(writer: int) -> None:
        connection = await asyncpg.connect(db_url)
        try:
            for _ in range(rounds):
                rows = batch(writer)
                sent.update((t, d, m) for t, d, m, _ in rows)
                async with connection.transaction():
                    await insert(connection, rows,
                                 " ON CONFLICT (device, metric, time) DO NOTHING")
                    await asyncio.sleep(0.005)
        finally:
            await connection.close()

    # Deadlocks would raise DeadlockDetectedError out of gather.
    await asyncio.wait_for(asyncio.gather(*(write(w) for w in range(writers))), 120)
    await assert_rollups_equal_raw(conn, buckets=6)
    assert await conn.fetchval("SELECT count(*) FROM telemetry") == len(sent)
    assert await conn.fetchval("SELECT sum(count) FROM telemetry_1h") == len(sent)


async def test_text_stays_out_and_bools_count_as_numbers(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO telemetry_text (time, device, metric, value) "
                       "VALUES ($1, 1, 5, 'running'), ($2, 1, 5, 'stopped')", at(1), at(2))
    assert await conn.fetchval("SELECT count(*) FROM telemetry_1h") == 0
    await insert(conn, [(at(1), 1, 6, 1.0), (at(1.5), 1, 6, 0.0), (at(2), 1, 6, 1.0)])
    assert tuple(await conn.fetchrow("SELECT avg, min, max, count FROM telemetry_1h")) == \
        (2 / 3, 0.0, 1.0, 3)
    await assert_rollups_equal_raw(conn)


async def test_deleted_raw_rows_keep_their_rollups_until_refreshed(conn: asyncpg.Connection
                                                                   ) -> None:
    rng = random.Random(5)
    await copy(conn, [(at(i * 0.37), 1 + i % 2, 1, eighths(rng)) for i in range(600)])
    before = [tuple(r) for r in await conn.fetch(ROLLUP.format(view="telemetry_1h"))]
    assert len(before) == 8  # 222 minutes: four hours, two devices

    # Retention deletes the first hour's raw rows: its rollups stay.
    await conn.execute("DELETE FROM telemetry WHERE time < $1", HOUR + timedelta(hours=1))
    assert [tuple(r) for r in await conn.fetch(ROLLUP.format(view="telemetry_1h"))] == before

    # A rollup gone wrong in the third hour is put right by a refresh of any part of it;
    # the rest (the first hour included) is left alone.
    third = HOUR + timedelta(hours=2)
    await conn.execute("UPDATE telemetry_1h_data SET sum = 0, count = 1 WHERE bucket = $1",
                       third)
    written = await conn.fetchval("SELECT telemetry_rollup_refresh($1, $2)",
                                  third + timedelta(minutes=10), third + timedelta(minutes=11))
    assert written == 2  # the hour's two devices
    assert [tuple(r) for r in await conn.fetch(ROLLUP.format(view="telemetry_1h"))] == before

    # Refreshing the first hour makes it what its raw rows say now: nothing.
    assert await conn.fetchval("SELECT telemetry_rollup_refresh($1, $2)",
                               HOUR, HOUR + timedelta(hours=1)) == 0
    await assert_rollups_equal_raw(conn)
    assert await conn.fetchval("SELECT count(*) FROM telemetry_1h") == 6


async def test_the_migration_backfills_what_is_stored(pg_dsn: str, tmp_path: Path) -> None:
    directory = plain_migrations(tmp_path)
    later = set_aside(directory, "0017")
    assert "0017_rollup_tables.sql" in {p.name for p in later}
    await migrate(pg_dsn, directory)
    conn = await asyncpg.connect(pg_dsn)
    try:
        rng = random.Random(1)
        await copy(conn, [(at(i * 0.5), 1 + i % 3, 1 + i % 2, eighths(rng)) for i in range(900)])
        put_back(later)
        assert "0017" in await migrate(pg_dsn, directory)
        await assert_rollups_equal_raw(conn, buckets=20)
        # And the trigger carries on from there, into the same buckets.
        await insert(conn, [(at(i * 0.5 + 0.25), 1, 1, eighths(rng)) for i in range(300)])
        await assert_rollups_equal_raw(conn, buckets=20)
        assert await conn.fetchval("SELECT sum(count) FROM telemetry_1h") == 1200
    finally:
        await conn.close()


# --- through the ingestor ---------------------------------------------------------------------


def message(ts: datetime, level: float, on: bool, mode: str) -> bytes:
    return orjson.dumps({"ts": int(ts.timestamp() * 1000),
                         "telemetry": {"level": level, "pump_on": on, "mode": mode}})


async def test_readings_through_the_ingestor(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        conn: asyncpg.Connection) -> None:
    """Real messages: numbers, bools and text; a batch delivered twice; late readings into
    buckets already filled; two devices at once."""
    ingestor_factory(**LOAD_GENERATOR)
    rng = random.Random(22)
    devices = [connect_device(broker, f"esp-roll-{n}") for n in range(2)]
    plan = {dev.client_id: [message(at(i * 0.4), rng.uniform(0, 1e4), rng.random() < 0.5,
                                    rng.choice(("auto", "manual"))) for i in range(400)]
            for dev in devices}
    late = {dev.client_id: [message(at(i * 0.4 + 0.2), rng.uniform(-50, 50), True, "auto")
                            for i in range(0, 400, 5)] for dev in devices}
    expected = sum(len(v) + len(late[k]) for k, v in plan.items())  # distinct readings
    for dev in devices:
        topic = telemetry_topic(dev.client_id)
        ours = plan[dev.client_id]
        dev.publish_many([(topic, p) for p in ours[:300]])
        dev.publish_many([(topic, p) for p in ours[:300]])  # the same batch again
        dev.publish_many([(topic, p) for p in ours[300:]])
    for dev in devices:
        dev.publish_many([(telemetry_topic(dev.client_id), p) for p in late[dev.client_id]])

    level = "SELECT count(*) FROM telemetry t JOIN metrics m ON m.id = t.metric " \
            "WHERE m.name = 'level'"
    await wait_until(lambda: conn.fetchval(level), lambda n: n == expected, timeout=60,
                     what="every reading stored")
    names = dict(await conn.fetch("SELECT name, id FROM metrics"))
    for name in ("level", "pump_on"):
        for _, view in WIDTHS:
            assert await conn.fetchval(f"SELECT sum(count) FROM {view} WHERE metric = $1",
                                       names[name]) == expected, (name, view)
    assert await conn.fetchval("SELECT count(*) FROM telemetry_1h WHERE metric = $1",
                               names["mode"]) == 0
    assert await conn.fetchval("SELECT count(*) FROM telemetry_text") == expected
    # Arbitrary floats: sums in another order may differ in the last bits, so avg is
    # compared to 1e-12; count, min and max must be equal.
    for width, view in WIDTHS:
        raw = await conn.fetch(RAW.format(width=width))
        rolled = await conn.fetch(ROLLUP.format(view=view))
        assert [tuple(r)[:3] for r in rolled] == [tuple(r)[:3] for r in raw]
        for a, b in zip(rolled, raw, strict=True):
            assert (a["min"], a["max"], a["count"]) == (b["min"], b["max"], b["count"])
            assert math.isclose(a["avg"], b["avg"], rel_tol=1e-12, abs_tol=1e-9)
    for dev in devices:
        dev.close()
