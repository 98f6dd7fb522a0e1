"""The edge tests' servers and tools: asyncua's and pymodbus's own servers on loopback, a
gateway account on the test broker, a subscriber to the gateway's telemetry, and what it
received as (device, metric, ts) → values."""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from asyncua import Node, Server, ua
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devtools.stack.processes import free_port
from devtools.stack.servers import RunningBroker
from services.edge.config import EdgeConfig
from services.edge.main import Edge
from services.edge.readings import epoch_us
from shared.broker_accounts import gateway_role, gateway_role_name
from shared.mqtt import gateway_topic
from tests.utils.mqtt_client import MqttClient

GATEWAY = "edge-gw-1"
NAMESPACE = "urn:insa:edge-test"
Key = tuple[str, str, int]  # device, metric, ts in epoch microseconds


def add_gateway(broker: RunningBroker, gateway_id: str = GATEWAY) -> str:
    """A gateway's account with its role (shared.broker_accounts.gateway_role), as the
    platform provisions one; returns its password."""
    password = secrets.token_urlsafe(18)
    role = gateway_role(gateway_id)
    with broker.admin() as admin:
        admin.execute({"command": "createRole", **role},
                      {"command": "createClient", "username": gateway_id,
                       "password": password, "clientid": gateway_id,
                       "roles": [{"rolename": gateway_role_name(gateway_id)}]})
    broker.credentials[gateway_id] = password
    return password


def telemetry_subscriber(broker: RunningBroker, gateway_id: str = GATEWAY) -> MqttClient:
    """The ingestor's account (it may read gateway telemetry) in a persistent session that
    comes back after a broker restart, so nothing published meanwhile passes it by."""
    client = MqttClient(broker.port, "insa-ingestor", broker.credentials["insa-ingestor"],
                        reconnect=True)
    assert not client.connect(clean_start=False, session_expiry=600).is_failure
    assert not client.subscribe(gateway_topic(gateway_id, "telemetry")).is_failure
    assert not client.subscribe(gateway_topic(gateway_id, "status")).is_failure
    return client


def received(client: MqttClient) -> dict[Key, list[tuple[Any, str | None]]]:
    """Every reading of every telemetry message received so far, by (device, metric, ts);
    a key with more than one entry came more than once."""
    found: dict[Key, list[tuple[Any, str | None]]] = defaultdict(list)
    for message in client.messages:
        if not message.topic.endswith("/telemetry"):
            continue
        for device, readings in orjson.loads(message.payload).items():
            for reading in readings:
                ts = epoch_us(datetime.fromisoformat(reading["ts"]))
                for metric, value in reading["telemetry"].items():
                    entry = (value["value"], value["unit"]) if isinstance(value, dict) \
                        else (value, None)
                    found[(device, metric, ts)].append(entry)
    return found


def latest(found: dict[Key, list[tuple[Any, str | None]]]) -> dict[tuple[str, str],
                                                                    tuple[Any, str | None]]:
    """The newest value and unit of each (device, metric)."""
    newest: dict[tuple[str, str], tuple[int, tuple[Any, str | None]]] = {}
    for (device, metric, ts), entries in found.items():
        if (device, metric) not in newest or ts > newest[(device, metric)][0]:
            newest[(device, metric)] = (ts, entries[-1])
    return {key: entry for key, (_, entry) in newest.items()}


def statuses(client: MqttClient) -> list[bytes]:
    return [m.payload for m in client.messages if m.topic.endswith("/status")]


def edge_config(tmp_path: Path, broker: RunningBroker, **sources: Any) -> EdgeConfig:
    """A mapping for the test broker (plain listener) and a buffer in `tmp_path`, with
    quick reconnects; `sources` gives the `opcua` and `modbus` lists."""
    return EdgeConfig.model_validate({
        "gateway": GATEWAY,
        "broker": {"host": "127.0.0.1", "port": broker.port, "tls": False,
                   "reconnect_max_seconds": 0.5},
        "buffer": {"path": str(tmp_path / "buffer.sqlite3")},
        "status": {"port": 0},
        **sources})


async def edge_status(edge: Edge) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{edge.status_port}/status", timeout=5)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def taken(edge: Edge) -> int:
    """Readings the edge program put in its buffer (new ones, not repeats)."""
    return int(sum(s.value for metric in edge.metrics.readings.collect()
                   for s in metric.samples if s.name.endswith("_total")))


class OpcUaTestServer:
    """asyncua's server on loopback with variables in one namespace (ns=2)."""

    def __init__(self, variables: dict[str, Any]) -> None:
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/insa/"
        self.variables = variables
        self.nodes: dict[str, Node] = {}
        self.server = Server()

    async def start(self) -> None:
        await self.server.init()
        self.server.set_endpoint(self.endpoint)
        self.server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await self.server.register_namespace(NAMESPACE)
        assert ns == 2
        well = await self.server.nodes.objects.add_object(ns, "Wells")
        for name, value in self.variables.items():
            self.nodes[name] = await well.add_variable(
                ua.NodeId.from_string(f"ns={ns};s={name}"), name, value)
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def resume(self) -> None:
        """Start again after `stop`, on the same port with the same nodes."""
        await self.server.start()

    async def write(self, name: str, value: Any) -> None:
        await self.nodes[name].write_value(value)

    def refuse_subscriptions(self) -> None:
        """Answer CreateSubscription with BadServiceUnsupported, as some servers do."""
        async def unsupported(*_args: Any, **_kwargs: Any) -> None:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadServiceUnsupported)

        setattr(self.server.iserver.subscription_service, "create_subscription", unsupported)  # noqa: B010


class ModbusTestServer:
    """pymodbus's server on loopback: unit 1 with holding registers 0..holding-1, the
    given input registers and coils; anything else is an illegal data address."""

    def __init__(self, holding: int, inputs: list[int], coils: list[bool],
                 port: int | None = None) -> None:
        self.port = port or free_port()
        device = SimDevice(id=1, simdata=(
            [SimData(0, values=coils, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, count=holding, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, values=inputs, datatype=DataType.REGISTERS)]))
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        self.writer = AsyncModbusTcpClient("127.0.0.1", port=self.port, retries=0,
                                           reconnect_delay=0)

    async def start(self) -> None:
        await self.server.serve_forever(background=True)
        assert await self.writer.connect()

    async def stop(self) -> None:
        self.writer.close()
        await self.server.shutdown()

    async def write(self, address: int, registers: list[int]) -> None:
        """As the device's own logic does: the edge only reads."""
        answer = await self.writer.write_registers(address, registers, device_id=1)
        assert not answer.isError(), answer
