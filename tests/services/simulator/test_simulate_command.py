"""`insa simulate` against a real broker and ingestor: devices connect, publish, go offline."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import redis

from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess
from services.simulator.main import Device, SimulatorConfig
from shared.streams import TELEMETRY
from tests.utils.db import fetch
from tests.utils.streams import range_entries
from tests.utils.waiting import wait_until


async def test_simulated_fleet_is_ingested(ingestor: ServiceProcess, broker: RunningBroker,
                                           redis_server: RunningRedis, db_url: str,
                                           tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    ids = ("sim-esp-001", "sim-esp-002")
    lines = [f"{d}={broker.add_device(d)}" for d in ids]
    secrets.write_text("\n".join(["postgres=not-a-device", *lines]) + "\n")
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "simulate", "--secrets", str(secrets),
        "--interval", "0.3", "--duration", "2", "--scenario", "sim-esp-002=overload",
        "--fault-onset", "0", "--mqtt-port", str(broker.port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(simulator.communicate(), 60)
    assert simulator.returncode == 0, output.decode()

    fleet_query = ("SELECT d.device_id, d.status, count(DISTINCT t.time) AS readings, "
                   "count(DISTINCT t.metric) AS metrics, "
                   "(SELECT count(*) FROM metrics WHERE unit IS NOT NULL) AS units "
                   "FROM devices d JOIN telemetry t ON t.device = d.id "
                   "GROUP BY d.device_id, d.status ORDER BY d.device_id")
    # The status "offline" is each device's last message: once both are offline, all is in.
    rows = await wait_until(lambda: fetch(db_url, fleet_query), lambda r: len(r) == 2 and
                            all(x["status"] == "offline" for x in r), what="fleet offline")
    assert [r["device_id"] for r in rows] == ["sim-esp-001", "sim-esp-002"]
    # Each device is its own well: the sensors it has, in the units it states.
    cfg = SimulatorConfig("", 0, {}, 0.3, {"sim-esp-002": "overload"})
    devices = [Device(cfg, d) for d in ids]
    for row, device in zip(rows, devices, strict=True):
        assert row["readings"] >= 3 and row["metrics"] == len(device.spec.sensors)
    stated = {m for d in devices if d.instruments.states_units for m in d.spec.sensors}
    assert rows[0]["units"] == len(stated)  # a metric's first reading carries its unit
    seqs = sorted(int(f[b"seq"]) for _, f in range_entries(redis.Redis.from_url(redis_server.url)
                  .xrange(TELEMETRY)) if f[b"device_id"] == b"sim-esp-001")
    assert seqs == list(range(len(seqs)))
