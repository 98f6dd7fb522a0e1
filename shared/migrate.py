"""Apply the ordered SQL migrations in `migrations/` (NNNN_name.sql), each exactly once.

Each file runs in its own transaction and is recorded in `schema_migrations` with its
SHA-256. A session-level advisory lock serialises concurrent runners (replicas starting
together): the second one waits, then finds everything applied and does nothing.
An applied file that was edited, or a recorded version whose file is gone, stops the
run: the database would no longer match the files.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from shared.errors import InsaError

log = structlog.get_logger(__name__)

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[1] / "migrations"
LOCK_KEY = 0x494E5341_4D494752  # "INSAMIGR": one fixed key for every runner
FILENAME = re.compile(r"^(\d{4})_(\w+)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(InsaError):
    """The migrations cannot be applied; the database is left as the last good one did."""

    code = "migration"


class InvalidMigrationFile(MigrationError):
    """A file in the migrations directory is misnamed or a version is used twice."""


class ChecksumMismatch(MigrationError):
    """An already-applied migration file was changed afterwards."""


class MissingMigration(MigrationError):
    """The database records a version that has no file."""


class OutOfOrderMigration(MigrationError):
    """A new file is numbered below a version that is already applied."""


class MigrationFailed(MigrationError):
    """A migration's SQL failed; its transaction was rolled back."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    path: Path
    sql: str
    checksum: str


def discover(directory: Path) -> list[Migration]:
    """The migration files in version order; any other *.sql file is an error, not skipped."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILENAME.match(path.name)
        if match is None:
            raise InvalidMigrationFile(f"{path}: migration files are named NNNN_name.sql",
                                       path=str(path))
        version, name = match.groups()
        if version in found:
            raise InvalidMigrationFile(
                f"version {version} used by both {found[version].path.name} and {path.name}",
                version=version)
        raw = path.read_bytes()
        found[version] = Migration(version, name, path, raw.decode("utf-8"),
                                   hashlib.sha256(raw).hexdigest())
    return [found[v] for v in sorted(found)]


async def applied_versions(conn: asyncpg.Connection) -> list[str]:
    """Versions recorded in this database, in order ([] before the first run)."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return []
    return [r["version"] for r in
            await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]


# Migrations whose comments (and nothing else) were edited after release, by version: the
# digests they had before, still accepted from a database that applied them then, and
# recorded anew on its next run. (2026-12-06: a design document outside the repository
# was cited; the repository's own docs are named instead.)
PREVIOUS_CHECKSUMS: dict[str, frozenset[str]] = {
    "0001": frozenset({"586ca9017c250de7578f397f064fa8e833a8d2eeaa5b13f450c0ea20b138f326"}),
    "0002": frozenset({"7475781df899d7217e1761a6341a218db65d35b8baea1a350fc4042ae6c3c240"}),
    "0003": frozenset({"1ac4f37dbbdc8733e404f2076b68440e0e5b3f3cd3381fbb93db7447136f3dba"}),
    "0005": frozenset({"3fed1d0cf862e212197396b25548edcdfe0dbfc0bfcebaf44593efb2f544755d"}),
    "0008": frozenset({"a4916725d5a10617532d0b82a44c5b1a3fe9156d8fc5ce2a96831bad7ad2662f"}),
}


def _outdated(files: list[Migration], applied: dict[str, str]) -> list[Migration]:
    """Applied migrations recorded with a digest they had before a comment-only edit."""
    return [m for m in files if applied.get(m.version, m.checksum) != m.checksum
            and applied[m.version] in PREVIOUS_CHECKSUMS.get(m.version, ())]


def _check(files: list[Migration], applied: dict[str, str]) -> list[Migration]:
    """Refuse a directory that disagrees with the database; return what is still to apply."""
    by_version = {m.version: m for m in files}
    missing = sorted(set(applied) - set(by_version))
    if missing:
        raise MissingMigration(f"applied migration(s) {', '.join(missing)} have no file",
                               versions=missing)
    for version, checksum in applied.items():
        if checksum not in {by_version[version].checksum,
                            *PREVIOUS_CHECKSUMS.get(version, ())}:
            raise ChecksumMismatch(
                f"{by_version[version].path.name} changed after it was applied; add a new "
                "migration instead of editing an applied one", version=version)
    pending = [m for m in files if m.version not in applied]
    if pending and applied and pending[0].version < max(applied):
        raise OutOfOrderMigration(
            f"{pending[0].path.name} is numbered below the applied version {max(applied)}",
            version=pending[0].version)
    return pending


def _relay_notice(conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
    log.info("migration notice", severity=message.severity, message=message.message)


async def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply every migration not applied yet, in order; returns the versions applied now."""
    files = discover(directory or DEFAULT_DIRECTORY)
    conn = await asyncpg.connect(dsn)
    try:
        # Held until the connection closes (which releases it, even after an error).
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await conn.execute(CREATE_TABLE)
        conn.add_log_listener(_relay_notice)  # the migrations' own NOTICEs, into our log
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        pending = _check(files, applied)
        for m in _outdated(files, applied):
            await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                               m.version, m.checksum)
        done: list[str] = []
        for m in pending:
            started = time.perf_counter()
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)", m.version, m.name, m.checksum)
            except asyncpg.PostgresError as exc:
                raise MigrationFailed(f"{m.path.name} failed and was rolled back: {exc}",
                                      version=m.version) from exc
            log.info("migration applied", version=m.version, name=m.name,
                     duration_ms=round((time.perf_counter() - started) * 1000, 1))
            done.append(m.version)
        return done
    finally:
        await conn.close()
