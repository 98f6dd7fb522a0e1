"""What the host sends, NCMD and DCMD, from our encoder: decoded by Tahu JS (the
independent codec) to the same values, refused when a value does not fit its datatype, and
decoded back by our decoder for every datatype."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.sparkplug import SparkplugError
from shared.sparkplug.encoding import OutMetric, encode
from shared.sparkplug.payload import DataSet, DataType, decode
from tests.shared.sparkplug_common import NOW, PROPERTIES, U64_MAX, f32, tahu
from tests.utils.sparkplug_edge import TahuCodec

__all__ = ["tahu"]  # the fixture, used by name


def test_rebirth_ncmd_decoded_by_tahu(tahu: TahuCodec) -> None:
    data = encode(NOW, None, [OutMetric("Node Control/Rebirth", DataType.Boolean, True)])
    decoded = tahu.decode(data)["payload"]
    assert decoded == {"timestamp": str(NOW), "metrics": [
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]}


# (datatype, value we send, what Tahu JS's decodePayload shows)
DCMD = [
    (DataType.Int8, -23, -23),
    (DataType.Int8, 127, 127),
    (DataType.Int16, -300, -300),
    (DataType.Int32, -2147483648, -2147483648),
    (DataType.Int64, -5, "-5"),
    (DataType.Int64, -(1 << 63), str(-(1 << 63))),
    (DataType.UInt8, 255, 255),
    (DataType.UInt16, 65535, 65535),
    (DataType.UInt64, U64_MAX, str(U64_MAX)),
    (DataType.Float, 12.1, f32(12.1)),
    (DataType.Double, -1 / 3, -1 / 3),
    (DataType.Boolean, False, False),
    (DataType.String, "héllo ✓", "héllo ✓"),
    (DataType.Text, "", ""),
    (DataType.UUID, "3f2c8a8e-4f3b-4a8e-9d2e-0c1b2a3d4e5f",
     "3f2c8a8e-4f3b-4a8e-9d2e-0c1b2a3d4e5f"),
    (DataType.DateTime, NOW, str(NOW)),
    (DataType.Bytes, b"\x00\xff", "00ff"),
    (DataType.File, b"", ""),
    (DataType.Int8Array, (-128, 5), [-128, 5]),
    (DataType.UInt64Array, (U64_MAX,), [str(U64_MAX)]),
    (DataType.DoubleArray, (0.5, -2.0), [0.5, -2.0]),
    (DataType.BooleanArray, (True, False, True), [True, False, True]),
    (DataType.StringArray, ("a", "", "b"), ["a", "", "b"]),
    (DataType.DateTimeArray, (NOW,), [str(NOW)]),
]


@pytest.mark.parametrize(("datatype", "value", "shown"), DCMD,
                         ids=[f"{d.name}-{v!r}" for d, v, _ in DCMD])
def test_dcmd_values_decoded_by_tahu(tahu: TahuCodec, datatype: DataType, value: Any,
                                     shown: Any) -> None:
    data = encode(NOW, None, [OutMetric("Outputs/Setpoint", datatype, value, alias=5,
                                        timestamp=NOW - 1)])
    [metric] = tahu.decode(data)["payload"]["metrics"]
    assert metric == {"name": "Outputs/Setpoint", "alias": "5", "timestamp": str(NOW - 1),
                      "type": datatype.name, "value": shown}
    assert decode(data).metrics[0].value == (f32(value) if datatype == DataType.Float else value)


def test_dcmd_uint32_goes_in_int_value_as_the_spec_says(tahu: TahuCodec) -> None:
    # Tahu JS 1.0.3's decodePayload reads UInt32 from long_value only (as its encoder and
    # Tahu Java's write it; Tahu Java reads both): check the wire itself.
    data = encode(None, None, [OutMetric("u", DataType.UInt32, 4_000_000_000)])
    [raw] = tahu.decode(data)["raw"]["metrics"]
    assert (raw["datatype"], raw["value"], raw["intValue"]) == (7, "intValue", 4_000_000_000)


def test_dcmd_by_alias_and_null_decoded_by_tahu(tahu: TahuCodec) -> None:
    data = encode(None, 0, [OutMetric(None, DataType.Int32, -7, alias=3),
                            OutMetric("Outputs/Clear", DataType.Double, None)])
    decoded = tahu.decode(data)
    by_alias, null = decoded["payload"]["metrics"]
    assert decoded["payload"]["seq"] == "0"
    assert by_alias == {"alias": "3", "type": "Int32", "value": -7}
    assert null == {"name": "Outputs/Clear", "type": "Double", "value": None}
    assert decoded["raw"]["metrics"][1]["isNull"] is True


@pytest.mark.parametrize(("metric", "why"), [
    (OutMetric("x", DataType.Int8, 128), "Int8 value 128 out of range"),
    (OutMetric("x", DataType.Int8, -129), "Int8 value -129 out of range"),
    (OutMetric("x", DataType.UInt8, 256), "UInt8 value 256 out of range"),
    (OutMetric("x", DataType.UInt32, -1), "UInt32 value -1 out of range"),
    (OutMetric("x", DataType.Int64, 1 << 63), "out of range"),
    (OutMetric("x", DataType.UInt64, 1 << 64), "out of range"),
    (OutMetric("x", DataType.DateTime, -1), "out of range"),
    (OutMetric("x", DataType.Int32, True), "is not an integer"),
    (OutMetric("x", DataType.Int32, 1.0), "is not an integer"),
    (OutMetric("x", DataType.Float, 1e39), r"Float value 1e\+39 out of range"),
    (OutMetric("x", DataType.Double, "1"), "is not a number"),
    (OutMetric("x", DataType.Boolean, 1), "is not a boolean"),
    (OutMetric("x", DataType.String, b"a"), "is not a string"),
    (OutMetric("x", DataType.String, "\udc80"), "cannot be encoded as UTF-8"),
    (OutMetric("x", DataType.Bytes, "00"), "is not bytes"),
    (OutMetric("x", DataType.Int8Array, [1, 200]), "Int8Array value out of range"),
    (OutMetric("x", DataType.Int8Array, "12"), "is not a sequence"),
    (OutMetric("x", DataType.BooleanArray, [1, 0]), "must be booleans"),
    (OutMetric("x", DataType.StringArray, ["a\0b"]), "cannot contain NUL"),
    (OutMetric("x", DataType.DataSet, DataSet((), (), ())), "cannot encode a DataSet"),
    (OutMetric("x", 99, 1), "unknown datatype 99"),
    (OutMetric(None, DataType.Int8, 1), "needs a name or an alias"),
    (OutMetric("x", DataType.Int8, 1, alias=-1), "alias -1 is not an unsigned 64-bit"),
])
def test_encode_refuses_values_that_do_not_fit(metric: OutMetric, why: str) -> None:
    with pytest.raises(SparkplugError, match=why):
        encode(None, None, [metric])


def test_encode_refuses_a_bad_timestamp_or_seq() -> None:
    with pytest.raises(SparkplugError, match="timestamp -1"):
        encode(-1, None, [])
    with pytest.raises(SparkplugError, match="seq"):
        encode(None, 1 << 64, [])


ROUND_TRIPS: list[tuple[DataType, st.SearchStrategy[Any]]] = [
    (DataType.Int8, st.integers(-128, 127)),
    (DataType.Int16, st.integers(-32768, 32767)),
    (DataType.Int32, st.integers(-(1 << 31), (1 << 31) - 1)),
    (DataType.Int64, st.integers(-(1 << 63), (1 << 63) - 1)),
    (DataType.UInt8, st.integers(0, 255)),
    (DataType.UInt16, st.integers(0, 65535)),
    (DataType.UInt32, st.integers(0, (1 << 32) - 1)),
    (DataType.UInt64, st.integers(0, U64_MAX)),
    (DataType.DateTime, st.integers(0, U64_MAX)),
    (DataType.Float, st.floats(width=32, allow_nan=False)),
    (DataType.Double, st.floats(allow_nan=False)),
    (DataType.Boolean, st.booleans()),
    (DataType.String, st.text()),
    (DataType.Bytes, st.binary()),
    (DataType.Int16Array, st.lists(st.integers(-32768, 32767)).map(tuple)),
    (DataType.UInt32Array, st.lists(st.integers(0, (1 << 32) - 1)).map(tuple)),
    (DataType.FloatArray, st.lists(st.floats(width=32, allow_nan=False)).map(tuple)),
    (DataType.BooleanArray, st.lists(st.booleans()).map(tuple)),
    (DataType.StringArray, st.lists(st.text().filter(lambda s: "\0" not in s)).map(tuple)),
]


@PROPERTIES
@given(st.sampled_from(ROUND_TRIPS).flatmap(
    lambda case: st.tuples(st.just(case[0]), case[1] | st.none())))
def test_what_we_encode_we_decode(case: tuple[DataType, Any]) -> None:
    datatype, value = case
    [metric] = decode(encode(NOW, 1, [OutMetric("m", datatype, value)])).metrics
    assert metric.datatype == datatype
    assert metric.value == value
    assert metric.is_null == (value is None)


