"""Fixtures: real servers per test (see tests/fixtures/servers.py)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from devtools.registry import INGESTOR
from devtools.stack.servers import (
    RunningBroker,
    RunningPostgres,
    RunningRedis,
    make_certs,
    remove_tree,
    start_broker,
    start_postgres,
    start_redis,
)
from devtools.stack.service_process import ServiceProcess, ingestor_environment


@pytest.fixture(autouse=True)
def _no_ambient_insa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A running stack's INSA_* variables must not leak into tests."""
    import os

    for key in list(os.environ):
        if key.startswith("INSA_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[RunningPostgres]:
    server = start_postgres()
    yield server
    server.stop()
    remove_tree(server.spec.datadir.parent)


@pytest.fixture
async def pg_dsn(postgres_server: RunningPostgres) -> AsyncIterator[str]:
    """A fresh, empty database for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.spec.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.spec.dsn(name)
    admin = await asyncpg.connect(postgres_server.spec.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def redis_server() -> Iterator[RunningRedis]:
    server = start_redis()
    yield server
    server.stop()
    remove_tree(server.spec.datadir)


@pytest.fixture(scope="session")
def dev_certs() -> Iterator[Path]:
    yield from make_certs()


@pytest.fixture
def broker(dev_certs: Path) -> Iterator[RunningBroker]:
    server = start_broker(dev_certs)
    yield server
    server.stop()
    remove_tree(server.spec.rundir)


@pytest.fixture
async def db_url(pg_dsn: str) -> str:
    """A fresh database with every migration applied."""
    from shared.migrate import migrate

    await migrate(pg_dsn)
    return pg_dsn


@pytest.fixture
def ingestor_factory(db_url: str, redis_server: RunningRedis, broker: RunningBroker,
                     tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start real ingestor processes (settings overrides as INSA_* keyword arguments)."""
    started: list[ServiceProcess] = []

    def start(wait_ready: bool = True, **overrides: str) -> ServiceProcess:
        env = ingestor_environment(db_url, redis_server.url, broker, **overrides)
        proc = ServiceProcess(INGESTOR, env, tmp_path / f"ingestor-{len(started)}.log")
        started.append(proc)
        proc.start(wait_ready)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


@pytest.fixture
def ingestor(ingestor_factory: Callable[..., ServiceProcess]) -> ServiceProcess:
    return ingestor_factory()
