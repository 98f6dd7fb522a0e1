"""The site's mapping file (TOML): the gateway, its broker, its buffer and status page, and
the OPC UA nodes and Modbus registers it reads, each mapped to a device, a metric and a
unit (the documented example: docs/examples/edge-site.toml).

Read with tomllib and validated with pydantic. Everything is checked before anything
connects, and an error names the file and where: a TOML syntax error its line, a bad
value its field (`modbus[0].blocks[1].points[2].address: ...`). Relative paths are
taken from the file's own folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from asyncua import ua
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.mqtt import NAME_RE, is_reserved_name
from shared.units import UnitError, conversion


class ConfigError(ValueError):
    """The mapping file cannot be used; the message says where and why."""


def _device_id(value: str) -> str:
    if not NAME_RE.fullmatch(value) or is_reserved_name(value):
        raise ValueError(f"{value!r} is not a device id: [A-Za-z0-9][A-Za-z0-9_.:-]{{0,127}}, "
                         "not starting with 'insa-'")
    return value


def _metric(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a metric name: [A-Za-z0-9][A-Za-z0-9_.:-]{{0,127}}")
    return value


DeviceId = Annotated[str, AfterValidator(_device_id)]
MetricName = Annotated[str, AfterValidator(_metric)]
Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _relative_to_file(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    return base / value if base is not None and not value.is_absolute() else value


FilePath = Annotated[Path, AfterValidator(_relative_to_file)]


class Section(BaseModel):
    # A misspelt key is an error, not a default silently used.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(Section):
    host: str
    tls: bool = True
    port: Port | None = None  # 8883 with TLS, 1883 without
    ca_file: FilePath | None = None  # None: the system's trusted CAs
    # The gateway's MQTT password is never in the file: this variable holds it.
    password_env: str = "INSA_EDGE_MQTT_PASSWORD"
    reconnect_max_seconds: Seconds = 5.0

    @property
    def resolved_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)


class BufferConfig(Section):
    path: FilePath
    # Bounded: when full, the oldest readings are dropped and counted (operations.md).
    max_readings: int = Field(1_000_000, ge=1)
    batch_readings: int = Field(500, ge=1, le=10_000)  # per MQTT message


class StatusConfig(Section):
    host: str = "127.0.0.1"  # local only unless the integrator says otherwise
    port: int = Field(8470, ge=0, le=65535)  # 0: any free port
    reject_log_seconds: Seconds = 300.0  # a rejected point is logged once per this


class PointConfig(Section):
    device: DeviceId
    metric: MetricName
    unit: str | None = Field(None, min_length=1, max_length=32)
    scale: float = 1.0  # published value = raw * scale + offset
    offset: float = 0.0

    @model_validator(mode="after")
    def _unit_can_express_metric(self) -> PointConfig:
        # The platform would reject every message carrying it (`bad_unit`): say so now.
        try:
            conversion(self.metric, self.unit)
        except UnitError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def label(self) -> str:
        return f"{self.device}/{self.metric}"


class OpcUaPointConfig(PointConfig):
    node: str  # a NodeId string: "ns=2;s=W-101.PIP", "ns=3;i=1042"

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        try:
            ua.NodeId.from_string(value)
        except (ValueError, ua.UaError) as exc:
            raise ValueError(f"{value!r} is not an OPC UA node id ({exc})") from None
        return value


class OpcUaServerConfig(Section):
    name: DeviceId  # a label for logs and the status page; the same pattern as an id
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security: Literal["none", "Basic256Sha256"] = "none"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: FilePath | None = None  # the client's, for Basic256Sha256
    private_key: FilePath | None = None
    server_certificate: FilePath | None = None  # None: taken from the server's endpoints
    # The client's application URI: a Basic256Sha256 certificate must name it (its URI SAN).
    application_uri: str = "urn:insa:edge"
    username: str | None = None
    password_env: str | None = None  # the variable holding the OPC UA user's password
    subscribe: bool = True  # False: poll only
    publishing_interval_ms: float = Field(1000.0, gt=0)
    sampling_interval_ms: float = Field(0.0, ge=0)  # 0: as fast as the server samples
    queue_size: int = Field(100, ge=1)  # changes the server keeps per node between publishes
    poll_interval_seconds: Seconds = 5.0  # when subscriptions are off, unsupported or fail
    timeout_seconds: Seconds = 4.0
    reconnect_max_seconds: Seconds = 5.0
    points: list[OpcUaPointConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _secured_needs_keys(self) -> OpcUaServerConfig:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security {self.security} needs certificate and private_key")
        return self


DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
REGISTERS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
                             "float32": 2, "float64": 4, "bool": 1}
BIT_FUNCTIONS = ("coils", "discrete_inputs")
# What one request may read (the Modbus specification's limits).
MAX_REGISTERS, MAX_BITS = 125, 2000


class ModbusPointConfig(PointConfig):
    address: int = Field(ge=0, le=65535)  # the protocol address, from 0 (40001 is 0)
    data_type: DataType | None = None  # required for registers; coils and inputs are bool


class ModbusBlockConfig(Section):
    function: Literal["holding_registers", "input_registers", "coils", "discrete_inputs"]
    start: int = Field(ge=0, le=65535)
    count: int = Field(ge=1)
    points: list[ModbusPointConfig] = Field(min_length=1)

    @property
    def bits(self) -> bool:
        return self.function in BIT_FUNCTIONS

    @model_validator(mode="after")
    def _points_inside(self) -> ModbusBlockConfig:
        limit = MAX_BITS if self.bits else MAX_REGISTERS
        if self.count > limit:
            raise ValueError(f"count {self.count}: one request reads at most {limit} "
                             f"{'bits' if self.bits else 'registers'}")
        if self.start + self.count > 65536:
            raise ValueError("start + count runs past address 65535")
        for n, point in enumerate(self.points):
            where = f"points[{n}] ({point.label})"
            if self.bits and point.data_type not in (None, "bool"):
                raise ValueError(f"{where}: {self.function} are bool, not {point.data_type}")
            if not self.bits and point.data_type is None:
                raise ValueError(f"{where}: data_type is required for {self.function}")
            width = REGISTERS[self.type_of(point)] if not self.bits else 1
            if not self.start <= point.address <= self.start + self.count - width:
                raise ValueError(f"{where}: address {point.address} ({width} wide) is outside "
                                 f"the block {self.start}..{self.start + self.count - 1}")
        return self

    def type_of(self, point: ModbusPointConfig) -> str:
        return point.data_type or "bool"


class ModbusServerConfig(Section):
    name: DeviceId  # a label for logs and the status page
    host: str
    port: Port = 502
    unit_id: int = Field(1, ge=0, le=255)
    poll_interval_seconds: Seconds = 5.0
    timeout_seconds: Seconds = 3.0
    reconnect_max_seconds: Seconds = 5.0
    byte_order: Literal["big", "little"] = "big"  # the two bytes within a register
    word_order: Literal["big", "little"] = "big"  # the registers of a 32/64-bit value
    blocks: list[ModbusBlockConfig] = Field(min_length=1)


class EdgeConfig(Section):
    gateway: DeviceId  # the gateway's id: its MQTT username and client id
    broker: BrokerConfig
    buffer: BufferConfig
    status: StatusConfig = StatusConfig()
    opcua: list[OpcUaServerConfig] = []
    modbus: list[ModbusServerConfig] = []

    @model_validator(mode="after")
    def _sources_and_points(self) -> EdgeConfig:
        if not self.opcua and not self.modbus:
            raise ValueError("no [[opcua]] or [[modbus]] server: nothing to read")
        names = [o.name for o in self.opcua] + [m.name for m in self.modbus]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"server names must differ: {', '.join(repeated)}")
        seen: dict[tuple[str, str], str] = {}
        for where, point in self.points():
            key = (point.device, point.metric)
            if key in seen:  # two sources of one series would overwrite each other
                raise ValueError(f"{where} maps {point.label}, as {seen[key]} does")
            seen[key] = where
        return self

    def points(self) -> Iterator[tuple[str, PointConfig]]:
        for i, opcua in enumerate(self.opcua):
            for j, point in enumerate(opcua.points):
                yield f"opcua[{i}].points[{j}]", point
        for i, modbus in enumerate(self.modbus):
            for j, block in enumerate(modbus.blocks):
                for k, mpoint in enumerate(block.points):
                    yield f"modbus[{i}].blocks[{j}].points[{k}]", mpoint


def load_config(path: Path) -> EdgeConfig:
    """The mapping file, checked; ConfigError names what is wrong and where."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:  # its message gives the line and column
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return EdgeConfig.model_validate(data, context={"base": path.resolve().parent})
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"
