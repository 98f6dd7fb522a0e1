"""Prepare and start PostgreSQL and Redis from the machine's binaries, unprivileged."""

from __future__ import annotations

import collections
import functools
import os
import pwd
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.health import StartupError, listen_socket

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                     "/usr/lib/postgresql/15/bin")


class DevstackError(RuntimeError):
    """A local server could not be prepared or did not come up."""


# Test and benchmark servers listen below Linux's ephemeral range (32768-60999 by
# default), where an outgoing connection's local port can never take a chosen port
# before its server binds it; the local stack's fixed ports lie below 20000.
TEST_PORTS = range(20000, 32768)
_recent: collections.deque[int] = collections.deque(maxlen=256)  # handed out lately


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range, not handed out before by
    this process lately, and in this pytest-xdist worker's own share of the range, so that two
    servers started at once cannot be given the same port before either binds it."""
    low, high = _share_of(TEST_PORTS.start, min(TEST_PORTS.stop, _ephemeral_low()))
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _recent:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _recent.append(port)
        return port
    raise DevstackError(f"no free port in {low}-{high - 1}")


def _share_of(low: int, high: int) -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or workers < 2:
        return low, high
    size = (high - low) // workers
    start = low + int(worker[2:]) * size
    return start, start + size


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket already listening on a free test port, for a server in this process:
    holding it closes the window in which another test's server could take the port."""
    for _ in range(100):
        try:
            return listen_socket(host, free_port())
        except StartupError:
            continue  # taken between the check and the bind
    raise DevstackError("no free port to listen on")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return TEST_PORTS.stop


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None,
                  what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise DevstackError(f"{what} exited with code {proc.returncode} before listening")
        time.sleep(0.05)
    raise DevstackError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def wait_for_postgres(port: int, timeout: float = 30.0,
                      proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until PostgreSQL accepts sessions: it listens before recovery ends, and a
    connection during recovery fails with "the database system is starting up"."""
    deadline = time.monotonic() + timeout
    wait_for_port(port, timeout, proc, what="postgres")
    isready = [pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    while time.monotonic() < deadline:
        if subprocess.run(isready, check=False).returncode == 0:
            return
        if proc is not None and proc.poll() is not None:
            raise DevstackError(f"postgres exited with code {proc.returncode} during start")
        time.sleep(0.1)
    raise DevstackError(f"postgres did not accept sessions on port {port} within {timeout:.0f}s")


def unprivileged_user(name: str) -> str | None:
    """The system account to run a server as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise DevstackError(f"running as root but system user {name!r} does not exist") from None
    return name


def hand_over(path: Path, user: str | None) -> None:
    """Give a directory tree to the account a server runs as."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found and tool not in ("postgres", "initdb", "pg_ctl"):
        return found
    for d in PG_BIN_CANDIDATES:
        candidate = Path(d) / tool
        if candidate.exists():
            return str(candidate)
    if found:
        return found
    raise DevstackError(f"PostgreSQL binary {tool!r} not found (looked in {PG_BIN_CANDIDATES})")


@functools.cache
def timescaledb_installed() -> bool:
    """Whether the PostgreSQL these tools run has TimescaleDB in its library directory."""
    bindir = Path(pg_bin("postgres")).parent
    pg_config = bindir / "pg_config"  # the server's own (its dev package), not libpq's
    if pg_config.exists():
        libdir = Path(subprocess.run([str(pg_config), "--pkglibdir"], check=True,
                                     capture_output=True, text=True).stdout.strip())
    else:
        libdir = bindir.parent / "lib"  # Debian's layout
    return (libdir / "timescaledb.so").exists()


@dataclass(frozen=True)
class PostgresSpec:
    datadir: Path
    port: int
    user: str
    password: str
    durable: bool = True  # tests turn fsync off for speed

    @property
    def socket_dir(self) -> Path:
        return self.datadir.parent / "pg-socket"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def argv(self) -> list[str]:
        argv = [pg_bin("postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", str(self.socket_dir)]
        if timescaledb_installed():
            # As production runs: without preloading, the migrations take the plain-PostgreSQL
            # branch even where the extension is installed.
            argv += ["-c", "shared_preload_libraries=timescaledb",
                     "-c", "timescaledb.telemetry_level=off"]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        return argv


def init_postgres(spec: PostgresSpec, os_user: str | None) -> None:
    """initdb once (no-op when the data directory already exists) with password auth."""
    spec.socket_dir.mkdir(parents=True, exist_ok=True)
    hand_over(spec.socket_dir, os_user)
    if (spec.datadir / "PG_VERSION").exists():
        return
    spec.datadir.mkdir(parents=True, exist_ok=True)
    pwfile = spec.datadir.parent / ".pg-initpw"
    pwfile.write_text(spec.password + "\n")
    pwfile.chmod(0o600)
    hand_over(spec.datadir, os_user)
    hand_over(pwfile, os_user)
    try:
        subprocess.run(
            [pg_bin("initdb"), "-D", str(spec.datadir), "-U", spec.user, "--pwfile", str(pwfile),
             "-A", "scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"],
            check=True, capture_output=True, user=os_user,
        )
    except subprocess.CalledProcessError as exc:
        raise DevstackError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        pwfile.unlink(missing_ok=True)
    with (spec.datadir / "postgresql.conf").open("a") as conf:
        conf.write("\n# insa devstack\nmax_connections = 200\nshared_buffers = 256MB\n"
                   "unix_socket_permissions = 0700\n")


@dataclass(frozen=True)
class RedisSpec:
    datadir: Path
    port: int
    password: str
    durable: bool = True

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def argv(self) -> list[str]:
        argv = [shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.datadir),
                "--requirepass", self.password, "--daemonize", "no", "--save", ""]
        # Streams are the hand-off between services: keep them across restarts.
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.durable \
            else ["--appendonly", "no"]
        return argv
