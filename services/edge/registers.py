"""Modbus registers to numbers: data types, byte order and word order.

A register is 16 bits, sent high byte first. Devices disagree on the rest, so both are
configured per server:

- byte order: the two bytes within each register (`big`: as sent, `little`: swapped);
- word order: the registers of a 32- or 64-bit value (`big`: most significant first,
  the Modbus convention; `little`: least significant first, "CDAB").

So the float32 whose IEEE bytes are A B C D is in registers [AB, CD] (big, big),
[CD, AB] (big byte, little word), [BA, DC] (little byte, big word) or [DC, BA] (little,
little).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
           "float32": ">f", "float64": ">d"}


def decode(registers: Sequence[int], data_type: str, byte_order: str = "big",
           word_order: str = "big") -> int | float | bool:
    """The value held by `registers` (exactly as many as the type takes)."""
    if data_type == "bool":  # a register holding a flag: anything but 0 is true
        return registers[0] != 0
    words = [r.to_bytes(2, "big") for r in registers]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    value: int | float = struct.unpack(FORMATS[data_type], b"".join(words))[0]
    return value


def encode(value: float, data_type: str, byte_order: str = "big",
           word_order: str = "big") -> list[int]:
    """The registers a device puts `value` in (the inverse of `decode`; for tests and
    for checking a mapping against a device's manual)."""
    raw = struct.pack(FORMATS[data_type], int(value) if data_type[0] in "iu" else value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]
