"""A service whose own parts cannot start exits at once with a non-zero status and a
clear log line, so its supervisor restarts it; it never lingers alive but deaf."""

from __future__ import annotations

import secrets
import signal
import socket
import time
from pathlib import Path

import pytest

from devtools.registry import ALERTS, API, DIAGNOSTICS, INGESTOR, Service
from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess, service_environment


def environment(service: Service, db_url: str, redis: RunningRedis, broker: RunningBroker,
                **overrides: str) -> dict[str, str]:
    extra = {"INSA_API_JWT_SECRET": secrets.token_hex(32),
             "INSA_API_ADMIN_PASSWORD": secrets.token_urlsafe(18)} if service is API else {}
    return service_environment(service, db_url, redis.url, broker, **extra, **overrides)


def wait_exit(proc: ServiceProcess, timeout: float) -> int:
    assert proc.proc is not None
    deadline = time.monotonic() + timeout
    while proc.proc.poll() is None:
        assert time.monotonic() < deadline, f"still running after {timeout}s:\n{proc.log()}"
        time.sleep(0.05)
    return proc.proc.returncode


@pytest.mark.parametrize("service", [INGESTOR, DIAGNOSTICS, ALERTS, API], ids=lambda s: s.name)
def test_a_held_port_ends_the_process_and_a_restart_recovers(
        service: Service, db_url: str, redis_server: RunningRedis, broker: RunningBroker,
        tmp_path: Path) -> None:
    env = environment(service, db_url, redis_server, broker)
    port = int(env[f"{service.env_prefix}HTTP_PORT"])
    holder = socket.socket()
    holder.bind(("0.0.0.0", port))
    holder.listen()
    blocked = ServiceProcess(service, env, tmp_path / "blocked.log")
    try:
        blocked.start(wait_ready=False)
        assert wait_exit(blocked, timeout=15) != 0
        log = blocked.log()
        assert f"{service.name} could not start" in log, log
        assert f"cannot listen on 0.0.0.0:{port}" in log and "in use" in log, log
    finally:
        holder.close()
        blocked.stop()
    # What a supervisor does next: start it again, now that the port is free.
    restarted = ServiceProcess(service, env, tmp_path / "restarted.log")
    try:
        restarted.start()  # waits until /health/ready answers 200
    finally:
        # uvicorn (the API) re-raises the SIGTERM it handled once it has drained.
        assert restarted.stop() in (0, -signal.SIGTERM)


def test_invalid_settings_end_the_process_with_the_reason(
        db_url: str, redis_server: RunningRedis, broker: RunningBroker, tmp_path: Path) -> None:
    env = environment(ALERTS, db_url, redis_server, broker, INSA_ALERTS_DRAIN_SECONDS="-1")
    proc = ServiceProcess(ALERTS, env, tmp_path / "alerts.log")
    proc.start(wait_ready=False)
    assert wait_exit(proc, timeout=15) != 0
    assert "alerts could not start: invalid settings" in proc.log()
    assert "drain_seconds" in proc.log()
