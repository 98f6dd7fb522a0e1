"""An edge connector through the whole platform: a gateway registered and provisioned
through the API, an OPC UA and a Modbus server read by the edge program, and the real
ingestor storing each reading once, in canonical units, for devices the gateway
registered."""

from __future__ import annotations

import struct
from pathlib import Path

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from services.edge.main import Edge
from tests.fixtures.api import Api
from tests.services.edge.helpers import GATEWAY, ModbusTestServer, OpcUaTestServer, edge_config
from tests.utils.db import fetch
from tests.utils.tasks import until_stopped
from tests.utils.waiting import wait_until

LATEST = """SELECT d.device_id, m.name, round(l.value::numeric, 2)::float8 AS value, d.gateway_id
            FROM telemetry_latest l JOIN metrics m ON m.id = l.metric
            JOIN devices d ON d.id = l.device ORDER BY 1, 2"""
DUPLICATES = """SELECT count(*) - count(DISTINCT (device, metric, time)) AS n FROM telemetry"""


async def test_edge_readings_are_stored_for_the_gateways_devices(
        api: Api, broker: RunningBroker, ingestor: ServiceProcess, db_url: str,
        tmp_path: Path) -> None:
    created = await api.admin.post("/gateways", json={
        "gateway_id": GATEWAY, "auto_register": True, "provision": True})
    assert created.status_code == 201, created.text
    opc = OpcUaTestServer({"W-1.pip": 5860.0})
    mb = ModbusTestServer(holding=2, inputs=[0], coils=[False])
    for server in (opc, mb):
        await server.start()
    await mb.write(0, list(struct.unpack(">2H", struct.pack(">f", 41.5))))
    config = edge_config(tmp_path, broker, opcua=[
        {"name": "vsd", "endpoint": opc.endpoint, "publishing_interval_ms": 50,
         "poll_interval_seconds": 0.3, "points": [
             {"node": "ns=2;s=W-1.pip", "device": "W-1", "metric": "pip", "unit": "kPa"}]}],
        modbus=[{"name": "rtu", "host": "127.0.0.1", "port": mb.port,
                 "poll_interval_seconds": 0.2, "blocks": [
                     {"function": "holding_registers", "start": 0, "count": 2, "points": [
                         {"device": "W-2", "metric": "motor_current", "address": 0,
                          "data_type": "float32", "unit": "A"}]}]}])
    try:
        edge = Edge(config, created.json()["credentials"]["password"])
        async with until_stopped(edge.run):
            rows = await wait_until(lambda: fetch(db_url, LATEST), lambda r: len(r) == 2,
                                    what="both points stored")
    finally:
        await opc.stop()
        await mb.stop()
    assert [tuple(r) for r in rows] == [("W-1", "pip", 849.92, GATEWAY),  # 5860 kPa in psi
                                        ("W-2", "motor_current", 41.5, GATEWAY)]
    assert (await fetch(db_url, DUPLICATES))[0]["n"] == 0
    assert (await fetch(db_url, "SELECT count(*) AS n FROM rejected_messages"))[0]["n"] == 0
