"""Modbus registers decode to the value the device meant, in every byte and word order."""

from __future__ import annotations

import struct

import pytest

from services.edge.registers import decode, encode

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


def layouts(raw: bytes) -> dict[tuple[str, str], list[int]]:
    """The registers a device puts the big-endian bytes `raw` in, per (byte, word) order,
    written out by hand: for ABCD, [AB, CD], [CD, AB], [BA, DC], [DC, BA]."""
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    swapped = [w[::-1] for w in words]
    as_int = lambda ws: [int.from_bytes(w, "big") for w in ws]  # noqa: E731
    return {("big", "big"): as_int(words), ("big", "little"): as_int(words[::-1]),
            ("little", "big"): as_int(swapped), ("little", "little"): as_int(swapped[::-1])}


@pytest.mark.parametrize(("data_type", "fmt", "value"), [
    ("int16", ">h", -1234), ("uint16", ">H", 54321), ("int32", ">i", -70_000_123),
    ("uint32", ">I", 4_000_000_123), ("float32", ">f", 12.345678),
    ("float64", ">d", -98765.4321)])
def test_every_type_decodes_in_every_order(data_type: str, fmt: str, value: float) -> None:
    raw = struct.pack(fmt, value)
    expected = struct.unpack(fmt, raw)[0]  # a float32 as the device holds it
    for (byte_order, word_order), registers in layouts(raw).items():
        assert decode(registers, data_type, byte_order, word_order) == expected, \
            (byte_order, word_order, [hex(r) for r in registers])
        assert encode(value, data_type, byte_order, word_order) == registers


def test_a_float32_in_cdab_order_as_a_manual_writes_it() -> None:
    # 123.456 is 0x42F6E979: "CDAB" (word order little) sends E979 first.
    assert decode([0xE979, 0x42F6], "float32", "big", "little") == pytest.approx(123.456,
                                                                                 rel=1e-7)
    assert decode([0x42F6, 0xE979], "float32") == pytest.approx(123.456, rel=1e-7)


def test_a_register_flag_is_true_unless_zero() -> None:
    assert decode([0], "bool") is False
    assert decode([0x0100], "bool") is True
