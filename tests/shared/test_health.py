"""Readiness names each failing dependency (503) and is 200 only when all are ok; the
probes keep it current; the HTTP server stops when told to. No servers: the app is driven
in-process, the server on a free local port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from shared.health import Health, health_app, listen_socket, probe_dependencies, serve_health
from shared.lifecycle import StartupError


@pytest.fixture
async def http() -> AsyncIterator[tuple[Health, httpx.AsyncClient]]:
    health = Health("postgres", "redis", "mqtt")
    transport = httpx.ASGITransport(app=health_app(health))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield health, client


async def test_ready_is_503_naming_each_failing_dependency(
        http: tuple[Health, httpx.AsyncClient]) -> None:
    health, client = http
    health.ok("postgres")
    health.failing("redis", "ConnectionError: refused")  # mqtt: never checked
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable",
                            "failing": {"redis": "ConnectionError: refused",
                                        "mqtt": "not checked yet"}}


async def test_ready_is_200_when_every_dependency_is_ok(
        http: tuple[Health, httpx.AsyncClient]) -> None:
    health, client = http
    health.failing("redis", "ConnectionError: refused")
    for dependency in ("postgres", "redis", "mqtt"):  # redis has recovered
        health.ok(dependency)
    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    assert health.ready


async def test_stopping_fails_readiness_but_not_liveness(
        http: tuple[Health, httpx.AsyncClient]) -> None:
    """Draining: the orchestrator moves traffic away, but must not restart the process."""
    health, client = http
    for dependency in ("postgres", "redis", "mqtt"):
        health.ok(dependency)
    health.stopping = True
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["failing"] == {"service": "shutting down"}
    live = await client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})


async def test_liveness_is_200_whatever_the_dependencies(
        http: tuple[Health, httpx.AsyncClient]) -> None:
    health, client = http
    health.failing("postgres", "OSError: down")
    assert (await client.get("/health/live")).status_code == 200
    assert not health.ready


async def test_metrics_serve_the_given_registry() -> None:
    registry = CollectorRegistry()
    Counter("insa_test_things", "Things counted.", registry=registry).inc(3)
    transport = httpx.ASGITransport(app=health_app(Health(), registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "insa_test_things_total 3.0" in metrics.text


async def test_probes_mark_each_dependency_and_follow_its_recovery() -> None:
    health = Health("postgres", "redis", "mqtt")
    redis_up = asyncio.Event()
    stop = asyncio.Event()

    async def fine() -> None:
        pass

    async def redis() -> None:
        if not redis_up.is_set():
            raise ConnectionError("refused")

    async def hangs() -> None:
        await asyncio.sleep(3600)

    probes: dict[str, Callable[[], Awaitable[object]]] = {
        "postgres": fine, "redis": redis, "mqtt": hangs}
    task = asyncio.create_task(probe_dependencies(health, probes, 0.05, stop))
    async with asyncio.timeout(5):
        while "not checked yet" in health.failures.values():
            await asyncio.sleep(0.01)
        # A probe that does not answer within the interval counts as failing.
        assert health.failures == {"redis": "ConnectionError: refused",
                                   "mqtt": "TimeoutError: "}
        redis_up.set()
        while "redis" in health.failures:
            await asyncio.sleep(0.01)
        stop.set()
        await task  # returns once stopped


async def test_the_server_answers_until_stopped() -> None:
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    health, stop = Health("postgres"), asyncio.Event()
    server = asyncio.create_task(serve_health(health, sock, stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        async with asyncio.timeout(10):
            while True:
                try:
                    ready = await client.get("/health/ready")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
        assert ready.json()["failing"] == {"postgres": "not checked yet"}
        stop.set()
        await asyncio.wait_for(server, 10)
        with pytest.raises(httpx.ConnectError):
            await client.get("/health/live")


def test_a_port_in_use_is_a_startup_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(StartupError, match=r"cannot listen on 127\.0\.0\.1:.*in use"):
            listen_socket("127.0.0.1", holder.getsockname()[1])


async def test_connections_on_the_listening_socket_send_without_nagle() -> None:
    """asyncio sets TCP_NODELAY only on accepted sockets whose protocol is TCP; on one
    opened with protocol 0, every small answer waited ~40 ms for the client's delayed ACK."""
    sock = listen_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn = transport.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    async with server:
        _reader, writer = await asyncio.open_connection(*sock.getsockname())
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
