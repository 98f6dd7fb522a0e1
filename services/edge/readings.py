"""What a source takes from a point: one reading of one device's metric at one time, and
the reason a point gave none (a reject)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    metric: str
    ts_us: int  # epoch microseconds: exact, and the key (with device and metric) it is stored by
    value: Value
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """A point that yielded no value, and why: `reason` is a stable label (metrics),
    `detail` the words for a person."""

    source: str
    point: str  # the node id or the registers, as the mapping file names them
    device: str
    metric: str
    reason: str
    detail: str


# Reject reasons.
UNKNOWN_NODE = "unknown_node"  # OPC UA: the node id does not exist on the server
BAD_STATUS = "bad_status"  # OPC UA: the server gave a Bad status for the node or its value
ILLEGAL_ADDRESS = "illegal_address"  # Modbus exception 2: no such register or coil
MODBUS_EXCEPTION = "modbus_exception"  # another Modbus exception code for the point's read
BAD_VALUE = "bad_value"  # a value the mapping cannot publish (type, NaN, infinity)


def epoch_us(at: datetime | float) -> int:
    """An aware datetime or epoch seconds as epoch microseconds."""
    if isinstance(at, datetime):
        return (at.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)
    return round(at * 1_000_000)


def from_epoch_us(ts_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=ts_us)


def scaled(raw: object, scale: float, offset: float) -> Value:
    """`raw * scale + offset` for a number (kept an int when nothing changes it); a bool or
    text as it is. Raises ValueError for anything JSON cannot carry as a reading's value."""
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int) and scale == 1 and offset == 0:
        return raw
    if isinstance(raw, int | float):
        value = raw * scale + offset
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value}")
        return value
    raise ValueError(f"a value of type {type(raw).__name__} cannot be published")
