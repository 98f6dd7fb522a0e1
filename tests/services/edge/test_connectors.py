"""The edge connectors against asyncua's and pymodbus's own servers and a real broker:
values arrive as the gateway's telemetry with their units, scaled, decoded in every byte
and word order; a node or register the server lacks is a reject on /status while every
other point goes on; a server without subscriptions is polled."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from devtools.stack.servers import RunningBroker
from services.edge.main import Edge
from tests.services.edge.helpers import (
    ModbusTestServer,
    OpcUaTestServer,
    add_gateway,
    edge_config,
    edge_status,
    latest,
    received,
    statuses,
    telemetry_subscriber,
)
from tests.utils.tasks import until_stopped
from tests.utils.waiting import wait_until

FLOAT = 12.345678
F32 = struct.unpack(">f", struct.pack(">f", FLOAT))[0]  # as a device holds it
A, B, C, D = struct.pack(">f", FLOAT)
# The same float32 in each (byte order, word order): ABCD, CDAB, BADC, DCBA.
ORDERS = {("big", "big"): [A << 8 | B, C << 8 | D], ("big", "little"): [C << 8 | D, A << 8 | B],
          ("little", "big"): [B << 8 | A, D << 8 | C],
          ("little", "little"): [D << 8 | C, B << 8 | A]}


def modbus_sources(port: int) -> list[dict[str, object]]:
    """One server, read as four devices would be: one source per byte and word order."""
    def source(name: str, byte: str, word: str, blocks: list[dict[str, object]]
               ) -> dict[str, object]:
        return {"name": name, "host": "127.0.0.1", "port": port, "poll_interval_seconds": 0.2,
                "byte_order": byte, "word_order": word, "blocks": blocks}

    def point(device: str, metric: str, address: int, data_type: str | None = None,
              **more: object) -> dict[str, object]:
        return {"device": device, "metric": metric, "address": address,
                **({"data_type": data_type} if data_type else {}), **more}

    main_blocks = [
        {"function": "holding_registers", "start": 0, "count": 18, "points": [
            point("W-BB", "motor_current", 0, "float32", unit="A"),
            point("W-BB", "wellhead_pressure", 8, "int16", unit="bar", scale=0.01),
            point("W-BB", "flow_rate", 10, "uint32", unit="m3/d", scale=0.1),
            point("W-BB", "power", 12, "float64", unit="kW"),
            point("W-BB", "counter", 16, "int32")]},
        {"function": "input_registers", "start": 0, "count": 3, "points": [
            point("W-BB", "motor_voltage", 1, "uint16", unit="V", scale=100)]},
        {"function": "coils", "start": 0, "count": 4, "points": [
            point("W-BB", "running", 2)]},
        # The server has holding registers 0..23 only: this block reaches past them.
        {"function": "holding_registers", "start": 18, "count": 8, "points": [
            point("W-BB", "gor", 18, "uint16", unit="scf/bbl"),
            point("W-BB", "intake_temp", 20, "float32", unit="degC"),  # NaN: not publishable
            point("W-BB", "discharge_pressure", 24, "uint16", unit="psi")]}]  # not there
    return [source("rtu-bb", "big", "big", main_blocks), *(
        source(f"rtu-{byte[0]}{word[0]}", byte, word, [
            {"function": "holding_registers", "start": start, "count": 2, "points": [
                point(f"W-{byte[0]}{word[0]}".upper(), "motor_current", start, "float32",
                      unit="A")]}])
        for start, (byte, word) in ((2, ("big", "little")), (4, ("little", "big")),
                                    (6, ("little", "little"))))]


async def test_points_arrive_decoded_scaled_with_units_and_a_missing_one_is_a_reject(
        broker: RunningBroker, tmp_path: Path) -> None:
    opc = OpcUaTestServer({"W-1.pip": 850.5, "W-1.freq": 5012, "W-1.running": True,
                           "W-1.temp": 180.0})
    unsubscribable = OpcUaTestServer({"W-2.pip": 901.0})
    mb = ModbusTestServer(holding=24, inputs=[7, 8, 9], coils=[False, False, True, False])
    for server in (opc, unsubscribable, mb):
        await server.start()
    unsubscribable.refuse_subscriptions()
    await mb.write(0, ORDERS[("big", "big")] + ORDERS[("big", "little")]
                   + ORDERS[("little", "big")] + ORDERS[("little", "little")])
    await mb.write(8, [1234, 0, *struct.unpack(">2H", struct.pack(">I", 70_000)),
                       *struct.unpack(">4H", struct.pack(">d", 75.25)),
                       *struct.unpack(">2H", struct.pack(">i", -5)), 4242, 0,
                       *struct.unpack(">2H", struct.pack(">f", float("nan")))])
    opcua = [
        {"name": "vsd-1", "endpoint": opc.endpoint, "publishing_interval_ms": 50,
         "poll_interval_seconds": 0.3, "points": [
             {"node": "ns=2;s=W-1.pip", "device": "W-1", "metric": "pip", "unit": "kPa"},
             {"node": "ns=2;s=W-1.freq", "device": "W-1", "metric": "vsd_frequency",
              "unit": "Hz", "scale": 0.01},
             {"node": "ns=2;s=W-1.running", "device": "W-1", "metric": "running"},
             {"node": "ns=2;s=W-1.nope", "device": "W-1", "metric": "motor_temp",
              "unit": "degC"}]},
        {"name": "vsd-1-polled", "endpoint": opc.endpoint, "subscribe": False,
         "poll_interval_seconds": 0.2, "points": [
             {"node": "ns=2;s=W-1.temp", "device": "W-1", "metric": "intake_temp",
              "unit": "degF", "offset": 0.5}]},
        {"name": "vsd-2", "endpoint": unsubscribable.endpoint, "poll_interval_seconds": 0.2,
         "points": [{"node": "ns=2;s=W-2.pip", "device": "W-2", "metric": "pip",
                     "unit": "psi"}]}]
    config = edge_config(tmp_path, broker, opcua=opcua, modbus=modbus_sources(mb.port))
    password = add_gateway(broker)
    subscriber = telemetry_subscriber(broker)
    expected = {
        ("W-1", "pip"): (850.5, "kPa"), ("W-1", "vsd_frequency"): (50.12, "Hz"),
        ("W-1", "running"): (True, None), ("W-1", "intake_temp"): (180.5, "degF"),
        ("W-2", "pip"): (901.0, "psi"),
        ("W-BB", "motor_current"): (F32, "A"), ("W-BL", "motor_current"): (F32, "A"),
        ("W-LB", "motor_current"): (F32, "A"), ("W-LL", "motor_current"): (F32, "A"),
        ("W-BB", "wellhead_pressure"): (12.34, "bar"),
        ("W-BB", "flow_rate"): (7000.0, "m3/d"), ("W-BB", "power"): (75.25, "kW"),
        ("W-BB", "counter"): (-5, None), ("W-BB", "motor_voltage"): (800, "V"),
        ("W-BB", "running"): (True, None), ("W-BB", "gor"): (4242, "scf/bbl")}
    try:
        edge = Edge(config, password)
        async with until_stopped(edge.run):
            async def values() -> dict[tuple[str, str], tuple[object, str | None]]:
                return latest(received(subscriber))

            got = await wait_until(values, lambda v: expected.keys() <= v.keys(),
                                   what="every mapped point's value")
            assert {k: (pytest.approx(v), u) for k, (v, u) in got.items() if k in expected} \
                == expected
            assert not {("W-1", "motor_temp"), ("W-BB", "intake_temp"),
                        ("W-BB", "discharge_pressure")} & got.keys()

            status = await wait_until(lambda: edge_status(edge),
                                      lambda s: len(s["rejects"]) == 3,
                                      what="the three rejects on /status")
            rejects = {(r["source"], r["device"], r["metric"]): (r["reason"], r["point"])
                       for r in status["rejects"]}
            assert rejects == {
                ("vsd-1", "W-1", "motor_temp"): ("unknown_node", "ns=2;s=W-1.nope"),
                ("rtu-bb", "W-BB", "intake_temp"):
                    ("bad_value", "holding_registers 20..21 of unit 1"),
                ("rtu-bb", "W-BB", "discharge_pressure"):
                    ("illegal_address", "holding_registers 24 of unit 1")}
            assert "BadNodeIdUnknown" in next(
                r["detail"] for r in status["rejects"] if r["metric"] == "motor_temp")
            assert {s["name"]: (s["connected"], s["mode"]) for s in status["sources"]} == {
                "vsd-1": (True, "subscription"), "vsd-1-polled": (True, "polling"),
                "vsd-2": (True, "polling"),  # subscriptions refused: polled instead
                "rtu-bb": (True, None), "rtu-bl": (True, None), "rtu-lb": (True, None),
                "rtu-ll": (True, None)}
            assert status["broker"] == {"connected": True, "problem": None}

            # The rest goes on: a new value beside the rejected node and register.
            await opc.write("W-1.pip", 860.0)
            await mb.write(18, [4243])
            await wait_until(values, lambda v: v[("W-1", "pip")] == (860.0, "kPa")
                             and v[("W-BB", "gor")] == (4243, "scf/bbl"),
                             what="new values beside the rejected points")
            metrics = {s.name: s.value for m in edge.metrics.registry.collect()
                       for s in m.samples if s.name == "insa_edge_rejects_total"
                       and s.labels["reason"] == "illegal_address"}
            assert metrics["insa_edge_rejects_total"] >= 1
        # Stopped: it said so, retained.
        async def said() -> list[bytes]:
            return statuses(subscriber)

        assert await wait_until(said, lambda s: s[-1:] == [b"offline"],
                                what="offline status") == [b"online", b"offline"]
    finally:
        subscriber.close()
        for server in (opc, unsubscribable, mb):
            await server.stop()
