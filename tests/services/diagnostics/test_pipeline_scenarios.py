"""The ten faults from the physical simulator through the real pipeline: each well is a
device with its own broker account publishing its day of readings (in its own units,
some sensors missing) over MQTT; the ingestor stores and streams them; the diagnostics
service diagnoses each fault with its code and at least its labelled severity."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devtools.stack.service_process import ServiceProcess
from services.simulator.faults import FAULTS
from services.simulator.scenario_file import (
    FleetConfig,
    fleet_records,
    label_records,
    make_instruments,
    plan_fleet,
    timestamp,
)
from shared.contract import SEVERITY_RANK as RANK
from shared.mqtt import telemetry_topic
from tests.utils.db import fetch
from tests.utils.mqtt_client import Clients
from tests.utils.waiting import wait_until


@pytest.mark.timeout(300)
async def test_every_fault_through_mqtt_ingest_and_the_service(
        ingestor: ServiceProcess, diagnostics_factory: Callable[..., ServiceProcess],
        clients: Clients, db_url: str) -> None:
    diagnostics_factory()
    wells = {f"W-{n}": fault for n, fault in enumerate(FAULTS, start=1)}
    # The day before yesterday: inside the telemetry's retention whatever the date.
    start = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    cfg = FleetConfig(wells=len(wells), hours=24, interval=60, seed=21, scenarios=wells,
                      setpoint_steps=5, stops=4, start=start)
    plans = plan_fleet(cfg)
    instruments = make_instruments(cfg, plans)
    per_device: dict[str, list[tuple[str, bytes]]] = {d: [] for d in wells}
    for record in fleet_records(cfg, plans, instruments):
        per_device[record.device_id].append((telemetry_topic(record.device_id), orjson.dumps(
            {"ts": timestamp(cfg, record.t), "telemetry": record.telemetry})))
    labels = {label["device_id"]: label for label in label_records(cfg, plans, instruments)}
    devices = {d: clients.device(d) for d in wells}
    threads = [threading.Thread(target=devices[d].publish_many, args=(items, 120))
               for d, items in per_device.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)

    async def judged() -> int:
        rows = await fetch(db_url, "SELECT count(*) AS n FROM diagnostics_progress p "
                                   "JOIN (SELECT device_id, max(ts) AS ts FROM unnest($1::text[],"
                                   " $2::timestamptz[]) AS t(device_id, ts) GROUP BY 1) w "
                                   "USING (device_id) WHERE p.last_ts >= w.ts",
                           list(per_device), [_last_ts(items) for items in per_device.values()])
        return int(rows[0]["n"])

    await wait_until(judged, lambda n: n == len(wells), timeout=180,
                     what="every well's last reading judged")
    rows = await fetch(db_url, "SELECT device_id, code, severity FROM diagnoses "
                               "WHERE NOT cleared AND severity <> 'info'")
    for device_id, fault in wells.items():
        found = [r["severity"] for r in rows if r["device_id"] == device_id and
                 r["code"] == fault]
        needed = RANK[str(labels[device_id]["min_severity"])]
        raised = [(r["code"], r["severity"]) for r in rows if r["device_id"] == device_id]
        assert any(RANK[s] >= needed for s in found), f"{device_id} {fault}: {raised}"


def _last_ts(items: list[tuple[str, bytes]]) -> object:
    return datetime.fromisoformat(orjson.loads(items[-1][1])["ts"].replace("Z", "+00:00"))
