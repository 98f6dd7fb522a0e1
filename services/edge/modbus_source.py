"""A Modbus TCP server's points (pymodbus): each block read in one request per poll, its
points decoded (type, byte and word order), scaled and buffered with the poll's time.

A block the server refuses with a Modbus exception (a register it does not have:
"illegal data address") is read point by point in that poll, so only the points it
really lacks are rejected and the rest of the block is still read. A failure of the
connection (no answer, refused, reset) ends the connection, and the source reconnects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse

from services.edge.config import (
    REGISTERS,
    ModbusBlockConfig,
    ModbusPointConfig,
    ModbusServerConfig,
)
from services.edge.readings import (
    BAD_VALUE,
    ILLEGAL_ADDRESS,
    MODBUS_EXCEPTION,
    Reading,
    Reject,
    epoch_us,
    scaled,
)
from services.edge.registers import decode
from services.edge.source import Sink, Source, SourceState
from shared.lifecycle import sleep_or_stop

log = structlog.get_logger(__name__)

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy",
                   10: "gateway path unavailable", 11: "gateway target failed to respond"}


class ModbusRefused(Exception):
    """The server answered a read with a Modbus exception code."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) "
                         f"reading {what}")
        self.code = code


class ModbusSource(Source):
    def __init__(self, config: ModbusServerConfig, sink: Sink) -> None:
        super().__init__(SourceState(config.name, "modbus", f"{config.host}:{config.port}"),
                         sink, config.reconnect_max_seconds)
        self.config = config
        self.client: AsyncModbusTcpClient | None = None

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError | TimeoutError | ModbusException)

    async def connect(self) -> None:
        cfg = self.config
        # No retries or reconnects of pymodbus's own: this source's loop does both.
        client = AsyncModbusTcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout_seconds,
                                      retries=0, reconnect_delay=0)
        self.client = client
        if not await client.connect():
            raise ConnectionError(f"cannot connect to {cfg.host}:{cfg.port}")

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def serve(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.poll_interval_seconds
        due = loop.time()
        while not stop.is_set():
            for block in self.config.blocks:
                await self.poll(block)
            # On a fixed schedule; a poll that overran skips the polls it missed.
            due = max(due + interval, loop.time())
            if await sleep_or_stop(stop, due - loop.time()):
                return

    async def poll(self, block: ModbusBlockConfig) -> None:
        """Read one block in one request and buffer its points' readings."""
        ts_us = epoch_us(time.time())
        try:
            values = await self.read(block, block.start, block.count)
        except ModbusRefused:
            await self.poll_points(block, ts_us)
            return
        readings = []
        for point in block.points:
            reading = await self.reading(block, point, values, ts_us)
            if reading is not None:
                readings.append(reading)
        await self.take(readings)

    async def poll_points(self, block: ModbusBlockConfig, ts_us: int) -> None:
        """The block was refused: read each point alone, and reject those refused."""
        readings = []
        for point in block.points:
            try:
                values = await self.read(block, point.address, self.width(block, point))
            except ModbusRefused as exc:
                await self.sink.reject(Reject(
                    self.name, self.describe(block, point.address, self.width(block, point)),
                    point.device, point.metric,
                    ILLEGAL_ADDRESS if exc.code == 2 else MODBUS_EXCEPTION, str(exc)))
                continue
            reading = await self.reading(block, point, values, ts_us, at=point.address)
            if reading is not None:
                readings.append(reading)
        await self.take(readings)

    async def reading(self, block: ModbusBlockConfig, point: ModbusPointConfig,
                      values: Sequence[int] | Sequence[bool], ts_us: int,
                      at: int | None = None) -> Reading | None:
        """The point's reading from the values read from address `at` on (the block's
        start by default), or None once its reject is recorded."""
        offset = point.address - (block.start if at is None else at)
        width = self.width(block, point)
        try:
            raw: object = bool(values[offset]) if block.bits else decode(
                [int(v) for v in values[offset:offset + width]], block.type_of(point),
                self.config.byte_order, self.config.word_order)
            value = scaled(raw, point.scale, point.offset)
        except ValueError as exc:
            await self.sink.reject(Reject(self.name, self.describe(block, point.address, width),
                                          point.device, point.metric, BAD_VALUE, str(exc)))
            return None
        return Reading(point.device, point.metric, ts_us, value, point.unit)

    async def read(self, block: ModbusBlockConfig, address: int,
                   count: int) -> list[int] | list[bool]:
        client = self.client
        if client is None or not client.connected:
            raise ConnectionError("not connected")
        unit = self.config.unit_id
        match block.function:
            case "holding_registers":
                response = await client.read_holding_registers(address, count=count,
                                                               device_id=unit)
            case "input_registers":
                response = await client.read_input_registers(address, count=count,
                                                             device_id=unit)
            case "coils":
                response = await client.read_coils(address, count=count, device_id=unit)
            case "discrete_inputs":
                response = await client.read_discrete_inputs(address, count=count,
                                                             device_id=unit)
        if isinstance(response, ExceptionResponse) or response.isError():
            code = getattr(response, "exception_code", 0)
            raise ModbusRefused(code, self.describe(block, address, count))
        # Bits come padded to whole bytes.
        return list(response.bits[:count]) if block.bits else list(response.registers)

    def width(self, block: ModbusBlockConfig, point: ModbusPointConfig) -> int:
        return 1 if block.bits else REGISTERS[block.type_of(point)]

    def describe(self, block: ModbusBlockConfig, address: int, count: int) -> str:
        where = f"{address}" if count == 1 else f"{address}..{address + count - 1}"
        return f"{block.function} {where} of unit {self.config.unit_id}"
