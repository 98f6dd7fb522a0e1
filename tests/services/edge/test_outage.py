"""A broker outage loses nothing, and neither does a restart of the edge program in the
middle of it: the sources keep reading into the buffer, the backlog survives the
restart, and once the broker is back every reading taken arrives, each (device, metric,
ts) with one value. (A message whose PUBACK was lost with the connection may arrive
twice: the same readings with the same times, which the platform stores once.) An OPC
UA or Modbus server that goes away stops only its own source, which comes back with it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from devtools.stack.servers import RunningBroker
from services.edge.config import EdgeConfig
from services.edge.main import Edge
from tests.services.edge.helpers import (
    Key,
    ModbusTestServer,
    OpcUaTestServer,
    add_gateway,
    edge_config,
    edge_status,
    received,
    taken,
    telemetry_subscriber,
)
from tests.utils.tasks import until_stopped
from tests.utils.waiting import wait_until

TICK = 0.05  # the sources' values change this often


@contextlib.asynccontextmanager
async def changing(opc: OpcUaTestServer, mb: ModbusTestServer | None = None
                   ) -> AsyncIterator[None]:
    """The site's values change every TICK, as a live process does."""
    async def change() -> None:
        k = 0
        while True:
            k += 1
            await opc.write("W-1.pip", 800.0 + k)
            if mb is not None:
                await mb.write(0, [k])
            await asyncio.sleep(TICK)

    task = asyncio.create_task(change())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def buffered(config: EdgeConfig) -> set[Key]:
    """What the buffer holds now, read beside the running program (WAL lets it)."""
    db = sqlite3.connect(f"file:{config.buffer.path}?mode=ro", uri=True)
    try:
        return set(db.execute("SELECT device, metric, ts_us FROM readings").fetchall())
    finally:
        db.close()


async def test_a_broker_outage_and_an_edge_restart_in_it_lose_nothing(
        broker: RunningBroker, tmp_path: Path) -> None:
    opc = OpcUaTestServer({"W-1.pip": 800.0})
    mb = ModbusTestServer(holding=2, inputs=[0], coils=[False])
    await opc.start()
    await mb.start()
    config = edge_config(
        tmp_path, broker,
        opcua=[{"name": "vsd-1", "endpoint": opc.endpoint, "publishing_interval_ms": 50,
                "points": [{"node": "ns=2;s=W-1.pip", "device": "W-1", "metric": "pip",
                            "unit": "psi"}]}],
        modbus=[{"name": "rtu-1", "host": "127.0.0.1", "port": mb.port,
                 "poll_interval_seconds": 0.1, "blocks": [
                     {"function": "holding_registers", "start": 0, "count": 1, "points": [
                         {"device": "W-2", "metric": "flow_rate", "address": 0,
                          "data_type": "uint16", "unit": "bbl/d"}]}]}])
    password = add_gateway(broker)
    subscriber = telemetry_subscriber(broker)

    async def arrived() -> dict[Key, list[tuple[object, str | None]]]:
        return received(subscriber)

    try:
        async with changing(opc, mb):
            first = Edge(config, password)
            async with until_stopped(first.run):
                await wait_until(arrived, lambda r: {k[0] for k in r} == {"W-1", "W-2"},
                                 what="both sources' readings")
                broker.stop()  # the outage
                await asyncio.sleep(1.5)
                status = await edge_status(first)
                assert not status["broker"]["connected"]
                assert all(s["connected"] for s in status["sources"])
                assert status["buffer"]["readings"] > 0
            backlog = buffered(config)  # stopped in the outage: its backlog stays behind
            assert {k[0] for k in backlog} == {"W-1", "W-2"}

            second = Edge(config, password)
            async with until_stopped(second.run):
                await asyncio.sleep(1.0)  # the restarted program reads on, into the buffer
                in_outage = buffered(config)
                assert backlog < in_outage
                broker.start()  # the outage ends
                await wait_until(arrived, lambda r: in_outage <= r.keys(), timeout=15,
                                 what="every reading of the outage delivered")
            total = taken(first) + taken(second)
        rest = buffered(config)  # taken as it stopped: sent after the next start
        delivery = await wait_until(arrived, lambda r: len(r.keys() | rest) >= total,
                                    timeout=10, what="the rest delivered")
    finally:
        subscriber.close()
        await opc.stop()
        await mb.stop()

    assert len(in_outage) >= 20  # both sources kept reading through the outage
    # Every reading taken was delivered or is still buffered, and nothing else came.
    assert len(delivery.keys() | rest) == total
    assert len(rest) < 10
    for key, values in delivery.items():
        assert len(set(values)) == 1, (key, values)  # one value per (device, metric, ts)


async def test_a_server_going_away_stops_only_its_own_source(broker: RunningBroker,
                                                             tmp_path: Path) -> None:
    opc = OpcUaTestServer({"W-1.pip": 800.0})
    mb = ModbusTestServer(holding=2, inputs=[0], coils=[False])
    await opc.start()
    await mb.start()
    config = edge_config(
        tmp_path, broker,
        opcua=[{"name": "vsd-1", "endpoint": opc.endpoint, "publishing_interval_ms": 50,
                "reconnect_max_seconds": 0.5, "points": [
                    {"node": "ns=2;s=W-1.pip", "device": "W-1", "metric": "pip"}]}],
        modbus=[{"name": "rtu-1", "host": "127.0.0.1", "port": mb.port,
                 "poll_interval_seconds": 0.1, "timeout_seconds": 0.5,
                 "reconnect_max_seconds": 0.5, "blocks": [
                     {"function": "holding_registers", "start": 0, "count": 1, "points": [
                         {"device": "W-2", "metric": "flow_rate", "address": 0,
                          "data_type": "uint16"}]}]}])
    password = add_gateway(broker)
    subscriber = telemetry_subscriber(broker)
    edge = Edge(config, password)

    async def newest(device: str) -> int:
        return max((k[2] for k in received(subscriber) if k[0] == device), default=0)

    async def flowing(device: str) -> None:
        """New readings of `device` keep arriving."""
        since = await newest(device)
        await wait_until(lambda: newest(device), lambda ts: ts > since,
                         what=f"new readings of {device}")

    async def source(name: str) -> dict[str, Any]:
        status = await edge_status(edge)
        found: dict[str, Any] = next(s for s in status["sources"] if s["name"] == name)
        return found

    try:
        async with until_stopped(edge.run):
            await flowing("W-2")
            await mb.stop()  # the RTU goes away
            down = await wait_until(lambda: source("rtu-1"), lambda s: not s["connected"],
                                    what="rtu-1 disconnected")
            assert down["problem"]
            async with changing(opc):
                await flowing("W-1")  # the other source goes on
            mb = ModbusTestServer(holding=2, inputs=[0], coils=[False], port=mb.port)
            await mb.start()  # back: polled again
            await flowing("W-2")

            await opc.stop()  # the VSD panel goes away
            await wait_until(lambda: source("vsd-1"), lambda s: not s["connected"],
                             what="vsd-1 disconnected")
            await flowing("W-2")
            await opc.resume()  # back: subscribed again
            async with changing(opc):
                await wait_until(lambda: source("vsd-1"), lambda s: s["connected"],
                                 timeout=20, what="vsd-1 reconnected")
                await flowing("W-1")
    finally:
        subscriber.close()
        await opc.stop()
        await mb.stop()

