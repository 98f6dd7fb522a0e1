"""The migration runner and the schema it builds, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from shared.migrate import (
    DEFAULT_DIRECTORY,
    PREVIOUS_CHECKSUMS,
    ChecksumMismatch,
    Migration,
    MigrationError,
    MigrationFailed,
    MissingMigration,
    OutOfOrderMigration,
    applied_versions,
    discover,
    migrate,
)
from shared.units import CANONICAL

FILES = discover(DEFAULT_DIRECTORY)
ALL_VERSIONS = [m.version for m in FILES]

TZ = "timestamp with time zone"
F8 = "double precision"
ROLLUP = [("bucket", TZ), ("device", "integer"), ("metric", "smallint"), ("avg", F8),
          ("min", F8), ("max", F8), ("count", "bigint")]
EXPECTED_COLUMNS = {
    "devices": [("id", "integer"), ("device_id", "text"), ("name", "text"),
                ("device_type", "text"), ("metadata", "jsonb"), ("status", "text"),
                ("status_changed_at", TZ), ("last_seen", TZ), ("created_at", TZ),
                ("updated_at", TZ), ("gateway_id", "text")],
    "gateways": [("gateway_id", "text"), ("name", "text"), ("protocol", "text"),
                 ("auto_register", "boolean"), ("metadata", "jsonb"), ("status", "text"),
                 ("status_changed_at", TZ), ("created_at", TZ), ("updated_at", TZ)],
    "metrics": [("id", "smallint"), ("name", "text"), ("unit", "text"), ("created_at", TZ),
                ("kind", "text")],
    "telemetry": [("time", TZ), ("device", "integer"), ("metric", "smallint"),
                  ("value", F8), ("quality", "smallint")],
    "telemetry_text": [("time", TZ), ("device", "integer"), ("metric", "smallint"),
                       ("value", "text"), ("quality", "smallint")],
    "telemetry_latest": [("device", "integer"), ("metric", "smallint"), ("time", TZ),
                         ("value", F8), ("value_text", "text"), ("quality", "smallint")],
    "rejected_messages": [("id", "bigint"), ("received_at", TZ), ("topic", "text"),
                          ("device_id", "text"), ("reason", "text"), ("detail", "text"),
                          ("payload", "bytea"), ("payload_size", "integer"),
                          ("message_count", "integer")],
    "device_suspensions": [("device_id", "text"), ("reason", "text"), ("detail", "text"),
                           ("suspended_at", TZ), ("until", TZ), ("confirmed_at", TZ)],
    "audit_log": [("id", "bigint"), ("at", TZ), ("actor", "text"), ("action", "text"),
                  ("subject", "text"), ("outcome", "text"), ("detail", "jsonb")],
    "telemetry_1m": ROLLUP,
    "telemetry_1h": ROLLUP,
    "device_units": [("device", "integer"), ("metric", "smallint"), ("unit", "text"),
                     ("updated_at", TZ)],
}

NOT_AVAILABLE = "TimescaleDB extension not available on this PostgreSQL"


def ts(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 22, hour, minute, second, tzinfo=UTC)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    yield connection
    await connection.close()


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_DIRECTORY, tmp_path / "migrations"))


async def timescaledb_state(conn: asyncpg.Connection) -> tuple[bool, bool]:
    """(extension files available, library in shared_preload_libraries)."""
    available = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')")
    preloaded = await conn.fetchval(
        "SELECT 'timescaledb' = ANY (regexp_split_to_array("
        "current_setting('shared_preload_libraries'), '[\\s,\"]+'))")
    return bool(available), bool(preloaded)


async def test_applies_everything_to_an_empty_database(pg_dsn: str,
                                                       conn: asyncpg.Connection) -> None:
    assert await applied_versions(conn) == []
    assert ALL_VERSIONS and ALL_VERSIONS == sorted(ALL_VERSIONS)

    assert await migrate(pg_dsn) == ALL_VERSIONS

    assert await applied_versions(conn) == ALL_VERSIONS
    for table, expected in EXPECTED_COLUMNS.items():
        rows = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            table)
        assert [(r["column_name"], r["data_type"]) for r in rows] == expected, table
    recorded = await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
    assert all(len(r["checksum"]) == 64 and r["applied_at"] for r in recorded)


async def test_schema_constraints(pg_dsn: str, conn: asyncpg.Connection) -> None:
    await migrate(pg_dsn)
    device = await conn.fetchval(
        "INSERT INTO devices (device_id) VALUES ('esp-01:pump.A_1') RETURNING id")
    row = await conn.fetchrow("SELECT * FROM devices WHERE id = $1", device)
    assert (row["device_type"], row["status"], row["metadata"]) == ("esp", "unknown", "{}")
    for bad in ("a/b", "+", "#", "-leading", "", "x" * 129):
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO devices (device_id) VALUES ($1)", bad)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO metrics (name) VALUES ('flow/rate')")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE devices SET status = 'lost'")

    insert = "INSERT INTO telemetry (time, device, metric, value) VALUES ($1, 1, 1, $2)"
    await conn.execute(insert, ts(10, 0), 1.0)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, ts(10, 0), 2.0)
    assert await conn.execute(insert + " ON CONFLICT (device, metric, time) DO NOTHING",
                              ts(10, 0), 2.0) == "INSERT 0 0"
    text_insert = "INSERT INTO telemetry_text (time, device, metric, value) VALUES ($1,1,1,$2)"
    await conn.execute(text_insert, ts(10, 0), "running")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(text_insert, ts(10, 0), "stopped")

    await conn.execute(
        "INSERT INTO rejected_messages (topic, reason, payload, payload_size) "
        "VALUES ('insa/devices/x/telemetry', 'bad_json', '\\x7b'::bytea, 1)")
    assert await conn.fetchval("SELECT count(*) FROM rejected_messages "
                               "WHERE received_at > now() - interval '1 minute'") == 1


async def test_latest_value_follows_event_time(pg_dsn: str, conn: asyncpg.Connection) -> None:
    await migrate(pg_dsn)
    upsert = """
        INSERT INTO telemetry_latest AS l (device, metric, time, value)
        VALUES (1, 1, $1, $2)
        ON CONFLICT (device, metric) DO UPDATE SET time = excluded.time, value = excluded.value
         WHERE excluded.time > l.time"""
    await conn.execute(upsert, ts(10, 5), 5.0)
    await conn.execute(upsert, ts(10, 1), 1.0)  # late reading: must not win
    assert await conn.fetchval("SELECT value FROM telemetry_latest") == 5.0
    await conn.execute(upsert, ts(10, 9), 9.0)
    assert await conn.fetchval("SELECT value FROM telemetry_latest") == 9.0


async def test_rollups_aggregate_telemetry(pg_dsn: str, conn: asyncpg.Connection) -> None:
    await migrate(pg_dsn)
    await conn.copy_records_to_table(
        "telemetry", columns=("time", "device", "metric", "value"),
        records=[(ts(10, 0, 10), 1, 1, 1.0), (ts(10, 0, 40), 1, 1, 3.0),
                 (ts(10, 1, 5), 1, 1, 5.0), (ts(11, 0), 1, 1, 7.0), (ts(10, 0, 20), 2, 1, 4.0)])
    columns = "bucket, device, metric, avg, min, max, count"
    per_minute = await conn.fetch(
        f"SELECT {columns} FROM telemetry_1m WHERE device = 1 ORDER BY bucket")
    assert [tuple(r) for r in per_minute] == [
        (ts(10, 0), 1, 1, 2.0, 1.0, 3.0, 2),
        (ts(10, 1), 1, 1, 5.0, 5.0, 5.0, 1),
        (ts(11, 0), 1, 1, 7.0, 7.0, 7.0, 1),
    ]
    per_hour = await conn.fetch(f"SELECT {columns} FROM telemetry_1h ORDER BY bucket, device")
    assert [tuple(r) for r in per_hour] == [
        (ts(10, 0), 1, 1, 3.0, 1.0, 5.0, 3),
        (ts(10, 0), 2, 1, 4.0, 4.0, 4.0, 1),
        (ts(11, 0), 1, 1, 7.0, 7.0, 7.0, 1),
    ]


async def migrated_before(name: str, dsn: str, migrations_copy: Path
                          ) -> tuple[Migration, list[Migration]]:
    """A database migrated up to just before migration `name`: that one and the later ones
    are taken out of the copy (put them back and migrate again to apply them)."""
    first = next(m for m in FILES if m.name == name)
    later = [m for m in FILES if m.version >= first.version]
    for m in later:
        (migrations_copy / m.path.name).unlink()
    await migrate(dsn, migrations_copy)
    return first, later


async def test_device_units_and_canonical_catalog_units(
        pg_dsn: str, conn: asyncpg.Connection, migrations_copy: Path) -> None:
    units_file, later = await migrated_before("device_units", pg_dsn, migrations_copy)
    # A catalog from before: its metrics carry the first unit a reading happened to give.
    await conn.execute("INSERT INTO metrics (name, unit) VALUES ('pip', 'kPa'), "
                       "('motor_temp', NULL), ('flow_rate', 'bbl/d'), ('torque', 'N*m')")
    device = await conn.fetchval("INSERT INTO devices (device_id) VALUES ('esp-1') RETURNING id")
    for m in later:
        shutil.copy(m.path, migrations_copy)
    assert await migrate(pg_dsn, migrations_copy) == [m.version for m in later]

    async def catalog() -> dict[str, str | None]:
        return {r["name"]: r["unit"] for r in await conn.fetch("SELECT name, unit FROM metrics")}

    # Known metrics now say their canonical unit; the others keep theirs.
    assert await catalog() == {"pip": "psi", "motor_temp": "degC", "flow_rate": "bbl/d",
                               "torque": "N*m"}
    # The migration's list is shared/units.py's CANONICAL, and running it again is harmless.
    assert dict(re.findall(r"\('(\w+)', '([^']+)'\)", units_file.sql)) == CANONICAL
    async with conn.transaction():
        await conn.execute(units_file.sql)
    assert await catalog() == {"pip": "psi", "motor_temp": "degC", "flow_rate": "bbl/d",
                               "torque": "N*m"}

    # One unit per (device, metric), for catalogued devices and metrics only.
    pip = await conn.fetchval("SELECT id FROM metrics WHERE name = 'pip'")
    insert = "INSERT INTO device_units (device, metric, unit) VALUES ($1, $2, $3)"
    await conn.execute(insert, device, pip, "kPa")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, device, pip, "bar")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(insert, device + 1, pip, "kPa")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(insert, device, 999, "kPa")
    assert await conn.fetchval("SELECT updated_at > now() - interval '1 minute' "
                               "FROM device_units") is True
    await conn.execute("DELETE FROM devices WHERE id = $1", device)
    assert await conn.fetchval("SELECT count(*) FROM device_units") == 0


async def test_metric_kind_backfilled_from_what_is_stored(
        pg_dsn: str, conn: asyncpg.Connection, migrations_copy: Path) -> None:
    kind_file, later = await migrated_before("data_quality", pg_dsn, migrations_copy)
    device = await conn.fetchval("INSERT INTO devices (device_id) VALUES ('esp-1') RETURNING id")
    ids = {r["name"]: r["id"] for r in await conn.fetch(
        "INSERT INTO metrics (name) VALUES ('pip'), ('torque'), ('mode'), ('unused') "
        "RETURNING name, id")}
    await conn.executemany(
        "INSERT INTO telemetry_latest (device, metric, time, value, value_text) "
        "VALUES ($1, $2, now(), $3, $4)",
        [(device, ids["torque"], 12.5, None), (device, ids["mode"], None, "auto")])
    for m in later:
        shutil.copy(m.path, migrations_copy)
    await migrate(pg_dsn, migrations_copy)
    kinds = {r["name"]: r["kind"] for r in await conn.fetch("SELECT name, kind FROM metrics")}
    # An ESP metric is a number before any value; the others say what they hold.
    assert kinds == {"pip": "number", "torque": "number", "mode": "text", "unused": None}
    # The migration's list of ESP metrics is shared/units.py's CANONICAL.
    assert set(re.findall(r"'(\w+)'", kind_file.sql.split("m.name IN")[1].split(")")[0])) \
        == set(CANONICAL)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE metrics SET kind = 'blob' WHERE name = 'unused'")


async def test_rerun_is_a_no_op(pg_dsn: str, conn: asyncpg.Connection) -> None:
    assert await migrate(pg_dsn) == ALL_VERSIONS
    before = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
    assert await migrate(pg_dsn) == []
    assert await conn.fetch("SELECT * FROM schema_migrations ORDER BY version") == before


async def test_concurrent_runners_apply_each_migration_once(pg_dsn: str,
                                                            conn: asyncpg.Connection) -> None:
    results = await asyncio.gather(*(migrate(pg_dsn) for _ in range(4)))
    assert sorted(results, key=len) == [[], [], [], ALL_VERSIONS]
    assert await applied_versions(conn) == ALL_VERSIONS


async def test_changed_checksum_is_refused(pg_dsn: str, conn: asyncpg.Connection,
                                           migrations_copy: Path) -> None:
    await migrate(pg_dsn, migrations_copy)
    first = migrations_copy / FILES[0].path.name
    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(ChecksumMismatch, match=re.escape(first.name)) as info:
        await migrate(pg_dsn, migrations_copy)
    assert isinstance(info.value, MigrationError)
    assert await applied_versions(conn) == ALL_VERSIONS


async def test_a_digest_from_before_a_comment_only_edit_is_accepted_and_renewed(
        pg_dsn: str, conn: asyncpg.Connection) -> None:
    """A database that applied a migration before its comments were edited (its recorded
    digest is the file's earlier one) migrates on, and then records the current one."""
    await migrate(pg_dsn)
    version, [before] = next(iter(PREVIOUS_CHECKSUMS.items()))
    await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                       version, before)
    assert await migrate(pg_dsn) == []
    current = next(m.checksum for m in FILES if m.version == version)
    assert await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = $1",
                               version) == current


async def test_recorded_version_without_file_is_refused(pg_dsn: str,
                                                        migrations_copy: Path) -> None:
    await migrate(pg_dsn, migrations_copy)
    (migrations_copy / FILES[-1].path.name).unlink()
    with pytest.raises(MissingMigration, match=ALL_VERSIONS[-1]):
        await migrate(pg_dsn, migrations_copy)


async def test_new_migration_is_applied_alone(pg_dsn: str, conn: asyncpg.Connection,
                                              migrations_copy: Path) -> None:
    await migrate(pg_dsn, migrations_copy)
    version = f"{int(ALL_VERSIONS[-1]) + 1:04d}"
    (migrations_copy / f"{version}_extra.sql").write_text(
        "CREATE TABLE extra (id integer PRIMARY KEY);\n"
        "INSERT INTO extra VALUES (1), (2);\n")
    assert await migrate(pg_dsn, migrations_copy) == [version]
    assert await conn.fetchval("SELECT count(*) FROM extra") == 2
    assert await applied_versions(conn) == [*ALL_VERSIONS, version]
    assert await conn.fetchval(
        "SELECT name FROM schema_migrations WHERE version = $1", version) == "extra"
    assert await migrate(pg_dsn, migrations_copy) == []


async def test_failing_migration_rolls_back_and_stops(pg_dsn: str, conn: asyncpg.Connection,
                                                      migrations_copy: Path) -> None:
    await migrate(pg_dsn, migrations_copy)
    (migrations_copy / "9001_half.sql").write_text(
        "CREATE TABLE half (id integer);\nSELECT no_such_function();\n")
    (migrations_copy / "9002_after.sql").write_text("CREATE TABLE after (id integer);\n")
    with pytest.raises(MigrationFailed, match=re.escape("9001_half.sql")):
        await migrate(pg_dsn, migrations_copy)
    assert await conn.fetchval("SELECT to_regclass('half')") is None
    assert await conn.fetchval("SELECT to_regclass('after')") is None
    assert await applied_versions(conn) == ALL_VERSIONS


async def test_new_file_below_applied_version_is_refused(pg_dsn: str,
                                                         migrations_copy: Path) -> None:
    await migrate(pg_dsn, migrations_copy)
    (migrations_copy / "9000_late.sql").write_text("SELECT 1;\n")
    await migrate(pg_dsn, migrations_copy)
    (migrations_copy / "8999_forgotten.sql").write_text("SELECT 1;\n")
    with pytest.raises(OutOfOrderMigration, match=re.escape("8999_forgotten.sql")):
        await migrate(pg_dsn, migrations_copy)


async def test_misnamed_file_is_refused(pg_dsn: str, migrations_copy: Path) -> None:
    (migrations_copy / "5_typo.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=re.escape("NNNN_name.sql")):
        await migrate(pg_dsn, migrations_copy)


async def test_timescaledb_branch(pg_dsn: str, conn: asyncpg.Connection) -> None:
    available, preloaded = await timescaledb_state(conn)
    if not available:
        pytest.skip(NOT_AVAILABLE)
    if not preloaded:
        pytest.skip("TimescaleDB is installed but not in shared_preload_libraries "
                    "(the plain fallback is tested instead)")
    await migrate(pg_dsn)
    hypertables = {r[0] for r in await conn.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert {"telemetry", "telemetry_text", "rejected_messages"} <= hypertables
    caggs = {r[0] for r in await conn.fetch(
        "SELECT view_name FROM timescaledb_information.continuous_aggregates")}
    assert caggs == {"telemetry_1m", "telemetry_1h"}
    jobs = {r[0]: r[1] for r in await conn.fetch(
        "SELECT proc_name, count(*) FROM timescaledb_information.jobs "
        "WHERE proc_name IN ('policy_compression', 'policy_retention', "
        "'policy_refresh_continuous_aggregate') GROUP BY proc_name")}
    assert jobs == {"policy_compression": 2, "policy_retention": 3,
                    "policy_refresh_continuous_aggregate": 2}


async def test_timescaledb_not_preloaded_falls_back(pg_dsn: str,
                                                    conn: asyncpg.Connection) -> None:
    available, preloaded = await timescaledb_state(conn)
    if not available:
        pytest.skip(NOT_AVAILABLE)
    if preloaded:
        pytest.skip("TimescaleDB is preloaded here (the TimescaleDB branch is tested instead)")
    await migrate(pg_dsn)
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    relkind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE relname = 'telemetry_1m'")
    assert relkind == "v"  # an ordinary view, not a continuous aggregate
