"""`insa edge --config FILE` as an integrator runs it, over TLS: killed (-9), its Will
says the gateway is offline; killed in a broker outage, its buffer keeps what it had
read and the next start delivers it; SIGTERM stops it cleanly, saying `offline`; a bad
mapping file ends it at once with status 2 and the reason."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from devtools.stack.processes import free_port
from devtools.stack.servers import RunningBroker
from tests.services.edge.helpers import (
    GATEWAY,
    Key,
    ModbusTestServer,
    add_gateway,
    received,
    statuses,
    telemetry_subscriber,
)
from tests.utils.waiting import wait_until

SITE = """
gateway = "{gateway}"

[broker]
host = "127.0.0.1"
port = {broker_port}
ca_file = "{ca_file}"
password_env = "SITE_GW_PASSWORD"
reconnect_max_seconds = 0.5

[buffer]
path = "buffer.sqlite3"

[status]
port = {status_port}

[[modbus]]
name = "rtu-1"
host = "127.0.0.1"
port = {modbus_port}
poll_interval_seconds = 0.1

[[modbus.blocks]]
function = "holding_registers"
start = 0
count = 2

[[modbus.blocks.points]]
device = "W-9"
metric = "flow_rate"
address = 0
data_type = "uint32"
unit = "bbl/d"
"""


async def start(site: Path, password: str, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "SITE_GW_PASSWORD": password, "INSA_LOG_FORMAT": "console"}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "edge", "--config", str(site), env=env,
            stdout=out, stderr=out)


def buffered(path: Path) -> set[Key]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return set(db.execute("SELECT device, metric, ts_us FROM readings").fetchall())
    finally:
        db.close()


async def test_killed_its_will_says_offline_and_killed_in_an_outage_it_delivers_later(
        broker: RunningBroker, tmp_path: Path) -> None:
    mb = ModbusTestServer(holding=2, inputs=[0], coils=[False])
    await mb.start()
    await mb.write(0, [0, 42])
    site = tmp_path / "site.toml"
    # Over TLS, trusting the broker's CA only.
    site.write_text(SITE.format(gateway=GATEWAY, broker_port=broker.spec.tls_port,
                                ca_file=broker.spec.ca_file, status_port=free_port(),
                                modbus_port=mb.port))
    password = add_gateway(broker)
    subscriber = telemetry_subscriber(broker)
    log = tmp_path / "edge.log"

    async def arrived() -> set[Key]:
        return set(received(subscriber))

    async def in_buffer() -> set[Key]:
        return buffered(tmp_path / "buffer.sqlite3")

    async def said() -> list[bytes]:
        return statuses(subscriber)

    try:
        edge = await start(site, password, log)
        await wait_until(arrived, bool, what="the first readings")
        edge.kill()  # kill -9 with the broker up: its Will says the gateway is offline
        assert await edge.wait() == -signal.SIGKILL
        await wait_until(said, lambda s: s == [b"online", b"offline"], what="the Will")

        edge = await start(site, password, log)
        await wait_until(said, lambda s: s[-1:] == [b"online"], what="online again")
        broker.stop()
        await wait_until(in_buffer, lambda b: len(b) >= 5, what="readings buffered in the outage")
        edge.kill()  # kill -9 in the outage: nothing flushed but what was committed
        assert await edge.wait() == -signal.SIGKILL
        backlog = buffered(tmp_path / "buffer.sqlite3")

        edge = await start(site, password, log)
        broker.start()
        await wait_until(arrived, lambda got: backlog <= got, timeout=20,
                         what="the killed program's backlog delivered")
        assert all(set(v) == {(42, "bbl/d")} for k, v in received(subscriber).items()
                   if k in backlog)
        edge.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(edge.wait(), 15) == 0, log.read_text()
        await wait_until(said, lambda s: s[-1:] == [b"offline"], what="offline, said")
    finally:
        subscriber.close()
        await mb.stop()


async def test_a_bad_mapping_file_ends_it_with_the_reason(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(gateway=GATEWAY, broker_port=8883, ca_file="ca.crt",
                                status_port=free_port(), modbus_port=502)
                    .replace("address = 0", "address = 1"))
    log = tmp_path / "edge.log"
    edge = await start(site, "a-password-of-the-gateway", log)
    assert await asyncio.wait_for(edge.wait(), 30) == 2
    assert "modbus[0].blocks[0]: Value error, points[0] (W-9/flow_rate): address 1 " \
        "(2 wide) is outside the block 0..1" in log.read_text()
