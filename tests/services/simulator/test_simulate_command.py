"""`insa simulate` against a real broker and ingestor: devices connect, publish, go offline."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import redis

from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess
from services.simulator.esp_model import UNITS
from tests.utils.waiting import wait_until


async def test_simulated_fleet_is_ingested(ingestor: ServiceProcess, broker: RunningBroker,
                                           redis_server: RunningRedis, db_url: str,
                                           tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    lines = [f"{d}={broker.add_device(d)}" for d in ("sim-esp-001", "sim-esp-002")]
    secrets.write_text("\n".join(["postgres=not-a-device", *lines]) + "\n")
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "simulate", "--secrets", str(secrets),
        "--interval", "0.3", "--duration", "2", "--scenario", "sim-esp-002=overload",
        "--fault-onset", "0", "--mqtt-port", str(broker.port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(simulator.communicate(), 60)
    assert simulator.returncode == 0, output.decode()

    async def fleet() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(db_url)
        try:
            return await conn.fetch(
                "SELECT d.device_id, d.status, count(DISTINCT t.time) AS readings, "
                "count(DISTINCT t.metric) AS metrics, "
                "(SELECT count(*) FROM metrics WHERE unit IS NOT NULL) AS units "
                "FROM devices d JOIN telemetry t ON t.device = d.id "
                "GROUP BY d.device_id, d.status ORDER BY d.device_id")
        finally:
            await conn.close()

    # The status "offline" is each device's last message: once both are offline, all is in.
    rows = await wait_until(fleet, lambda r: len(r) == 2 and
                            all(x["status"] == "offline" for x in r), what="fleet offline")
    assert [r["device_id"] for r in rows] == ["sim-esp-001", "sim-esp-002"]
    for row in rows:
        assert row["readings"] >= 3 and row["metrics"] == len(UNITS)
    assert rows[0]["units"] == len(UNITS)  # the first reading carries units
    seqs = sorted(int(f[b"seq"]) for _, f in redis.Redis.from_url(redis_server.url)
                  .xrange("insa:telemetry") if f[b"device_id"] == b"sim-esp-001")
    assert seqs == list(range(len(seqs)))
