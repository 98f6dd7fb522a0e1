"""Sparkplug B payloads a host sends, NCMD and DCMD, into bytes (`encode`): each metric's
value carried in the field its datatype takes (signed integers as the 32- or 64-bit two's
complement Tahu reads too), and anything that does not fit a SparkplugError naming it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from shared.sparkplug import SparkplugError
from shared.sparkplug import sparkplug_b_pb2 as pb
from shared.sparkplug.payload import (
    FLOAT32_MAX,
    PACKED,
    WIDTH,
    DataType,
    Scalar,
    Value,
    data_type,
    label,
)

_U32 = 1 << 32
_U64 = 1 << 64
# What `encode` takes: arrays as any sequence (a list or a tuple).
OutValue: TypeAlias = "Value | Sequence[bool | int | float | str]"


@dataclass(frozen=True, slots=True)
class OutMetric:
    """A metric for `encode`: by name, alias or both; `value=None` sends is_null."""

    name: str | None
    datatype: DataType | int
    value: OutValue
    alias: int | None = None
    timestamp: int | None = None



def encode(timestamp: int | None, seq: int | None, metrics: Iterable[OutMetric]) -> bytes:
    """An NCMD or DCMD payload, e.g. `encode(now_ms, None, [OutMetric("Node Control/Rebirth",
    DataType.Boolean, True)])`. SparkplugError if a value does not fit its datatype."""
    message = pb.Payload()
    if timestamp is not None:
        message.timestamp = _uint64(timestamp, "timestamp")
    if seq is not None:
        message.seq = _uint64(seq, "seq")
    for index, metric in enumerate(metrics):
        try:
            _encode_metric(message.metrics.add(), metric)
        except SparkplugError as exc:
            raise SparkplugError(f"metric {index} ({label(metric.name, metric.alias)}): "
                                 f"{exc}") from None
    return message.SerializeToString()


def _uint64(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
        raise SparkplugError(f"{what} {value!r} is not an unsigned 64-bit integer")
    return value


def _encode_metric(out: pb.Payload.Metric, metric: OutMetric) -> None:
    if metric.name is None and metric.alias is None:
        raise SparkplugError("a metric needs a name or an alias")
    if metric.name is not None:
        out.name = _encodable_text(metric.name, "name")
    if metric.alias is not None:
        out.alias = _uint64(metric.alias, "alias")
    if metric.timestamp is not None:
        out.timestamp = _uint64(metric.timestamp, "timestamp")
    kind = data_type(metric.datatype)
    out.datatype = kind
    if metric.value is None:
        out.is_null = True
        return
    raw_field, raw_value = _to_raw(kind, metric.value)
    setattr(out, raw_field, raw_value)


def _encodable_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise SparkplugError(f"{what} {value!r} is not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SparkplugError(f"{what} {value!r} cannot be encoded as UTF-8") from None
    return value


def _to_raw(kind: DataType, value: OutValue) -> tuple[str, Scalar]:
    def bad(why: str = "does not fit") -> SparkplugError:
        return SparkplugError(f"{kind.name} value {value!r} {why}")

    if kind in WIDTH:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("is not an integer")
        bits = WIDTH[kind]
        signed = kind in (DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64)
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
        if not low <= value < high:
            raise bad("out of range")
        raw_field = "long_value" if bits == 64 else "int_value"
        return raw_field, value % (_U64 if bits == 64 else _U32)  # two's complement
    if kind in (DataType.Float, DataType.Double):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad("is not a number")
        number = float(value)
        if kind == DataType.Float and math.isfinite(number) and abs(number) > FLOAT32_MAX:
            raise bad("out of range")
        return ("float_value" if kind == DataType.Float else "double_value"), number
    if kind == DataType.Boolean:
        if not isinstance(value, bool):
            raise bad("is not a boolean")
        return "boolean_value", value
    if kind in (DataType.String, DataType.Text, DataType.UUID):
        return "string_value", _encodable_text(value, kind.name)
    if kind in (DataType.Bytes, DataType.File):
        if not isinstance(value, bytes | bytearray | memoryview):
            raise bad("is not bytes")
        return "bytes_value", bytes(value)
    if kind in PACKED or kind in (DataType.BooleanArray, DataType.StringArray):
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise bad("is not a sequence")
        return "bytes_value", _pack(kind, value)
    raise SparkplugError(f"cannot encode a {kind.name} value")


def _pack(kind: DataType, values: Sequence[object]) -> bytes:
    if kind == DataType.BooleanArray:
        if not all(isinstance(v, bool) for v in values):
            raise SparkplugError("BooleanArray values must be booleans")
        bits = bytearray((len(values) + 7) // 8)
        for i, v in enumerate(values):
            if v:
                bits[i >> 3] |= 0x80 >> (i & 7)
        return len(values).to_bytes(4, "little") + bytes(bits)
    if kind == DataType.StringArray:
        texts = [_encodable_text(v, "StringArray value") for v in values]
        if any("\0" in t for t in texts):
            raise SparkplugError("StringArray values cannot contain NUL")
        return b"".join(t.encode("utf-8") + b"\0" for t in texts)
    code = PACKED[kind]
    if code not in "fd" and any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise SparkplugError(f"{kind.name} values must be integers")
    if code in "fd" and any(not isinstance(v, int | float) or isinstance(v, bool)
                            for v in values):
        raise SparkplugError(f"{kind.name} values must be numbers")
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except (struct.error, OverflowError) as exc:
        raise SparkplugError(f"{kind.name} value out of range: {exc}") from None
