"""The Sparkplug B payload codec (shared/sparkplug/payload.py) against an independent one:
Eclipse Tahu's JS codec in tests/tools/sparkplug_edge/edge.js (one node process per module).
What Tahu JS encodes, we decode to the same values; what we encode, Tahu JS decodes to the
same values; malformed bytes raise SparkplugError and nothing else."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.sparkplug import SparkplugError
from shared.sparkplug import sparkplug_b_pb2 as pb
from shared.sparkplug.encoding import OutMetric, encode
from shared.sparkplug.payload import (
    DataSet,
    DataType,
    Metric,
    Template,
    decode,
    resolve,
    typed_value,
)
from tests.shared.sparkplug_common import NOW, PROPERTIES, U64_MAX, f32, tahu
from tests.utils.sparkplug_edge import TahuCodec

__all__ = ["tahu"]  # the fixture, used by name


def tahu_metric(tahu: TahuCodec, **metric: Any) -> Metric:
    """One metric encoded by Tahu JS, decoded by us."""
    payload = decode(tahu.encode({"timestamp": NOW, "seq": 1, "metrics": [metric]}))
    assert len(payload.metrics) == 1
    return payload.metrics[0]


# ---- Tahu JS encodes, we decode ----------------------------------------------------------

# (Tahu type, value sent, value expected, protobuf field Tahu puts it in)
SCALARS = [
    ("Int8", -128, -128, "int_value"),
    ("Int8", -23, -23, "int_value"),
    ("Int8", 127, 127, "int_value"),
    ("Int16", -32768, -32768, "int_value"),
    ("Int16", -300, -300, "int_value"),
    ("Int16", 32767, 32767, "int_value"),
    ("Int32", -2147483648, -2147483648, "int_value"),
    ("Int32", -1, -1, "int_value"),
    ("Int32", 2147483647, 2147483647, "int_value"),
    ("Int64", "-9223372036854775808", -(1 << 63), "long_value"),
    ("Int64", -5, -5, "long_value"),
    ("Int64", "9223372036854775807", (1 << 63) - 1, "long_value"),
    ("UInt8", 255, 255, "int_value"),
    ("UInt16", 65535, 65535, "int_value"),
    ("UInt32", 4294967295, 4294967295, "long_value"),  # Tahu's field; the spec's is int_value
    ("UInt64", "18446744073709551615", U64_MAX, "long_value"),
    ("UInt64", "18446744073709551557", U64_MAX - 58, "long_value"),
    ("UInt64", 0, 0, "long_value"),
    ("Float", 12.1, f32(12.1), "float_value"),
    ("Float", -3.4e38, f32(-3.4e38), "float_value"),
    ("Double", 1 / 3, 1 / 3, "double_value"),
    ("Double", -1e308, -1e308, "double_value"),
    ("Boolean", True, True, "boolean_value"),
    ("Boolean", False, False, "boolean_value"),
    ("String", "héllo ✓ \U0001f600", "héllo ✓ \U0001f600", "string_value"),
    ("String", "", "", "string_value"),
    ("Text", "line 1\nline 2", "line 1\nline 2", "string_value"),
    ("UUID", "3f2c8a8e-4f3b-4a8e-9d2e-0c1b2a3d4e5f", "3f2c8a8e-4f3b-4a8e-9d2e-0c1b2a3d4e5f",
     "string_value"),
    ("DateTime", NOW, NOW, "long_value"),
    ("DateTime", "0", 0, "long_value"),
    ("Bytes", "00ff10", b"\x00\xff\x10", "bytes_value"),
    ("Bytes", "", b"", "bytes_value"),
    ("File", "cafe", b"\xca\xfe", "bytes_value"),
]


@pytest.mark.parametrize(("type_", "sent", "expected", "raw_field"), SCALARS,
                         ids=[f"{c[0]}-{c[1]}" for c in SCALARS])
def test_every_scalar_datatype_from_tahu(tahu: TahuCodec, type_: str, sent: Any,
                                         expected: Any, raw_field: str) -> None:
    metric = tahu_metric(tahu, name="m", type=type_, value=sent)
    assert metric.datatype == DataType[type_]
    assert metric.value == expected
    assert type(metric.value) is type(expected)
    assert metric.raw_field == raw_field
    assert not metric.is_null


def test_payload_and_metric_fields_from_tahu(tahu: TahuCodec) -> None:
    payload = decode(tahu.encode({
        "timestamp": "18446744073709551615", "seq": 255, "uuid": "schema-1", "body": "0102",
        "metrics": [
            {"name": "Supply Voltage", "alias": "18446744073709551615", "timestamp": NOW - 5,
             "type": "Double", "value": 12.5, "isHistorical": True, "isTransient": True,
             "metadata": {"contentType": "text/plain", "size": 3, "seq": 2, "fileName": "a.txt",
                          "md5": "abc", "description": "d", "isMultiPart": False}},
        ]}))
    assert (payload.timestamp, payload.seq, payload.uuid, payload.body) == (
        U64_MAX, 255, "schema-1", b"\x01\x02")
    [metric] = payload.metrics
    assert (metric.name, metric.alias, metric.timestamp) == ("Supply Voltage", U64_MAX, NOW - 5)
    assert metric.is_historical and metric.is_transient and not metric.is_null
    assert metric.metadata is not None
    assert (metric.metadata.content_type, metric.metadata.size, metric.metadata.seq,
            metric.metadata.file_name, metric.metadata.md5, metric.metadata.description,
            metric.metadata.is_multi_part) == ("text/plain", 3, 2, "a.txt", "abc", "d", False)


def test_an_empty_payload(tahu: TahuCodec) -> None:
    payload = decode(tahu.encode({}))
    assert payload.timestamp is None and payload.seq is None and payload.metrics == ()
    assert decode(b"").metrics == ()


@pytest.mark.parametrize("type_", ["Int8", "Int64", "UInt64", "Float", "Double", "Boolean",
                                   "String", "DateTime", "Bytes", "Int32Array"])
def test_null_values_from_tahu(tahu: TahuCodec, type_: str) -> None:
    metric = tahu_metric(tahu, name="m", type=type_, value=None)
    assert metric.is_null
    assert metric.value is None
    assert metric.datatype == DataType[type_]


def test_aliases_without_names_or_datatypes_resolve_by_the_births_datatype(
        tahu: TahuCodec) -> None:
    # A DATA message as edge nodes send it after the birth: alias only, no datatype.
    payload = decode(tahu.encode({"timestamp": NOW, "seq": 4, "metrics": [
        {"alias": 7, "type": "Int16", "value": -300, "omitDatatype": True},
        {"alias": 8, "type": "Int64", "value": "-2", "omitDatatype": True},
        {"alias": 9, "type": "Float", "value": 1.25, "omitDatatype": True},
        {"alias": 10, "type": "String", "value": "on", "omitDatatype": True},
        {"alias": 11, "type": "Int8", "value": None, "omitDatatype": True},
        {"alias": 12, "type": "UInt8Array", "value": [1, 255], "omitDatatype": True},
    ]}))
    short, long_, real, text, null, array = payload.metrics
    assert all(m.name is None and m.datatype is None for m in payload.metrics)
    assert [m.alias for m in payload.metrics] == [7, 8, 9, 10, 11, 12]
    # Until resolved, the value is the raw field's, read no further.
    assert (short.raw_field, short.value) == ("int_value", (1 << 32) - 300)
    assert (long_.raw_field, long_.value) == ("long_value", U64_MAX - 1)
    assert (text.raw_field, text.value) == ("string_value", "on")
    assert resolve(short, DataType.Int16).value == -300
    assert resolve(short, DataType.Int16).datatype == DataType.Int16
    assert resolve(long_, DataType.Int64).value == -2
    assert resolve(real, DataType.Float).value == 1.25
    assert resolve(text, DataType.Text).value == "on"
    assert resolve(null, DataType.Int8).value is None
    assert resolve(array, DataType.UInt8Array).value == (1, 255)
    assert typed_value(short.raw_field, short.raw_value, DataType.Int32) == -300
    with pytest.raises(SparkplugError, match=r"alias 7: Boolean value in int_value, "
                                             r"expected boolean_value"):
        resolve(short, DataType.Boolean)
    with pytest.raises(SparkplugError, match="UInt16 value 4294966996 out of range"):
        resolve(short, DataType.UInt16)
    named = tahu_metric(tahu, name="m", type="Int16", value=5)
    with pytest.raises(SparkplugError, match="'m' is Int16, its birth says Int32"):
        resolve(named, DataType.Int32)


def test_properties_from_tahu(tahu: TahuCodec) -> None:
    metric = tahu_metric(tahu, name="Pressure", type="Float", value=7.5, properties={
        "engUnit": {"type": "String", "value": "bar"},
        "Quality": {"type": "Int32", "value": 192},
        "engLow": {"type": "Int64", "value": "-40"},
        "engHigh": {"type": "UInt64", "value": "18446744073709551615"},
        "readOnly": {"type": "Boolean", "value": False},
        "scale": {"type": "Double", "value": 0.1},
        "offset": {"type": "Int8", "value": -3},
        "note": {"type": "String", "value": None},
        "limits": {"type": "PropertySet", "value": {
            "hi": {"type": "Float", "value": 9.5},
            "deep": {"type": "PropertySet", "value": {"x": {"type": "UInt16", "value": 7}}},
        }},
        "history": {"type": "PropertySetList", "value": [
            {"a": {"type": "Int32", "value": -1}}, {"b": {"type": "Text", "value": "t"}},
        ]},
    })
    assert metric.value == 7.5
    assert metric.properties == {
        "engUnit": "bar", "Quality": 192, "engLow": -40, "engHigh": U64_MAX,
        "readOnly": False, "scale": 0.1, "offset": -3, "note": None,
        "limits": {"hi": 9.5, "deep": {"x": 7}},
        "history": ({"a": -1}, {"b": "t"}),
    }


# Every array type, packed by edge.js (Tahu JS 1.0.3 has no array types) by the spec.
ARRAYS: list[tuple[str, list[Any]]] = [
    ("Int8Array", [-128, -23, 0, 127]),
    ("Int16Array", [-32768, -300, 32767]),
    ("Int32Array", [-2147483648, 0, 2147483647]),
    ("Int64Array", [-(1 << 63), -1, (1 << 63) - 1]),
    ("UInt8Array", [0, 200, 255]),
    ("UInt16Array", [0, 65535]),
    ("UInt32Array", [0, 4294967295]),
    ("UInt64Array", [0, U64_MAX]),
    ("FloatArray", [1.5, -2.25, 3.4028234663852886e38]),
    ("DoubleArray", [1 / 3, -1e308, 0.0]),
    ("BooleanArray", [True, False, True, True, False, True, False, False, True]),
    ("BooleanArray", []),
    ("StringArray", ["ab", "", "é ✓", "last"]),
    ("StringArray", []),
    ("DateTimeArray", [NOW, 0]),
    ("Int32Array", []),
]


@pytest.mark.parametrize(("type_", "values"), ARRAYS,
                         ids=[f"{t}-{len(v)}" for t, v in ARRAYS])
def test_array_types_from_the_edge(tahu: TahuCodec, type_: str, values: list[Any]) -> None:
    # 64-bit elements go to edge.js as strings: JSON numbers lose precision past 2**53.
    sent = [str(v) for v in values] if type_ in ("Int64Array", "UInt64Array") else values
    metric = tahu_metric(tahu, name="a", type=type_, value=sent)
    assert metric.datatype == DataType[type_]
    assert metric.raw_field == "bytes_value"
    assert metric.value == tuple(values)


def test_the_boolean_array_layout_of_the_spec() -> None:
    # [false, false, true, true, false, true, false, false, true, true, false, true]:
    # a 4-byte little-endian count, then the bits most significant first.
    raw = bytes.fromhex("0c000000" "34" "d0")
    expected = (False, False, True, True, False, True, False, False, True, True, False, True)
    assert typed_value("bytes_value", raw, DataType.BooleanArray) == expected
    encoded = decode(encode(None, None, [OutMetric("b", DataType.BooleanArray, expected)]))
    assert encoded.metrics[0].raw_value == raw


def test_dataset_from_tahu(tahu: TahuCodec) -> None:
    metric = tahu_metric(tahu, name="Table", type="DataSet", value={
        "numOfColumns": 6, "columns": ["id", "name", "ok", "level", "count", "delta"],
        "types": ["Int32", "String", "Boolean", "Double", "UInt64", "Int64"],
        "rows": [[-1, "a", True, 0.5, 18, -7], [2, "b", False, -1.5, 0, 9]],
    })
    assert metric.datatype == DataType.DataSet
    assert metric.value == DataSet(
        columns=("id", "name", "ok", "level", "count", "delta"),
        types=(DataType.Int32, DataType.String, DataType.Boolean, DataType.Double,
               DataType.UInt64, DataType.Int64),
        rows=((-1, "a", True, 0.5, 18, -7), (2, "b", False, -1.5, 0, 9)))


def test_templates_from_tahu(tahu: TahuCodec) -> None:
    definition = tahu_metric(tahu, name="Pump UDT", type="Template", value={
        "version": "1.0", "isDefinition": True,
        "metrics": [{"name": "Speed", "type": "Int32", "value": 0},
                    {"name": "Running", "type": "Boolean", "value": False}],
        "parameters": [{"name": "Rated", "type": "Float", "value": 60.0},
                       {"name": "Offset", "type": "Int16", "value": -2}],
    })
    instance = tahu_metric(tahu, name="Pump 1", type="Template", value={
        "templateRef": "Pump UDT", "isDefinition": False,
        "metrics": [{"name": "Speed", "type": "Int32", "value": -1450}],
    })
    assert isinstance(definition.value, Template)
    assert definition.value.is_definition and definition.value.version == "1.0"
    assert definition.value.template_ref is None
    assert [(m.name, m.value) for m in definition.value.metrics] == [
        ("Speed", 0), ("Running", False)]
    assert [(p.name, p.datatype, p.value) for p in definition.value.parameters] == [
        ("Rated", DataType.Float, 60.0), ("Offset", DataType.Int16, -2)]
    assert isinstance(instance.value, Template)
    assert not instance.value.is_definition
    assert instance.value.template_ref == "Pump UDT"
    assert instance.value.metrics[0].value == -1450


# ---- malformed payloads ------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "why"), [
    ({"name": "x", "type": "Int8", "value": 300}, r"metric 0 \('x'\): Int8 value 300 out of range"),
    ({"name": "x", "type": "Int8", "value": 4294967000}, "Int8 value 4294967000 out of range"),
    ({"name": "x", "type": "Int16", "value": 70000}, "Int16 value 70000 out of range"),
    ({"name": "x", "type": "UInt8", "value": 256}, "UInt8 value 256 out of range"),
    ({"name": "x", "type": "UInt16", "value": -1}, "UInt16 value 4294967295 out of range"),
    ({"name": "x", "type": "UInt32", "value": "4294967296"}, "UInt32 value 4294967296 out of"),
    ({"name": "x", "type": "Int32", "value": 1, "datatype": 99}, "unknown datatype 99"),
    ({"name": "x", "type": "Boolean", "value": True, "datatype": 3},
     "Int32 value in boolean_value, expected int_value"),
    ({"name": "x", "type": "Int32"},
     r"metric 0 \('x'\): Int32 has no value and is_null is not set"),
    ({"name": "x", "type": "Int32", "value": 1, "datatype": 20},
     "PropertySet is not a value datatype"),
    ({"alias": 4, "type": "Bytes", "value": "0900000001", "datatype": 32},
     r"metric 0 \(alias 4\): BooleanArray of 9 values in 1 bytes, not 2"),
    ({"name": "x", "type": "Bytes", "value": "000000", "datatype": 32}, "no 4-byte count"),
    ({"name": "x", "type": "Bytes", "value": "010203", "datatype": 23},
     "Int16Array of 3 bytes: not a whole number of 2-byte values"),
    ({"name": "x", "type": "Bytes", "value": "6162", "datatype": 33},
     "StringArray does not end with a NUL"),
    ({"name": "x", "type": "Bytes", "value": "ff00", "datatype": 33},
     "StringArray is not valid UTF-8"),
    ({"name": "x", "type": "Float", "value": 1, "properties": {
        "q": {"type": "Int8", "value": 1000}}}, "property 'q': Int8 value 1000 out of range"),
    ({"name": "x", "type": "Float", "value": 1, "properties": {
        "q": {"type": "Bytes", "value": "00"}}}, "property type Bytes is not a basic type"),
    ({"name": "x", "type": "DataSet", "value": {
        "numOfColumns": 1, "columns": ["a"], "types": ["UInt8"], "rows": [[300]]}},
     "DataSet row 0 column 0: UInt8 value 300 out of range"),
    ({"name": "x", "type": "DataSet", "value": {
        "numOfColumns": 1, "columns": ["a", "b"], "types": ["Int8"], "rows": []}},
     "DataSet has 2 column names, 1 types and num_of_columns 1"),
    ({"name": "T", "type": "Template", "value": {"isDefinition": True, "metrics": [
        {"name": "in", "type": "Int8", "value": 999}]}},
     r"metric 0 \('T'\): template metric 0 \('in'\): Int8 value 999 out of range"),
])
def test_malformed_metrics_from_tahu_raise(tahu: TahuCodec, metric: dict[str, Any],
                                           why: str) -> None:
    assert re.search(why, failure(tahu.encode({"timestamp": NOW, "metrics": [metric]})))


def failure(data: bytes) -> str:
    """Why `data` does not decode: the payload's error, or its one bad metric's (a bad
    metric does not fail the others: it carries its error)."""
    try:
        payload = decode(data)
    except SparkplugError as exc:
        return str(exc)
    errors = [m.error for m in payload.metrics if m.error is not None]
    assert len(errors) == 1, payload
    return errors[0]


def malformed_protobuf() -> list[tuple[bytes, str]]:
    # Structures Tahu JS will not make, built with the schema's own protobuf classes.
    cases = []
    keys = pb.Payload()
    metric = keys.metrics.add(name="x", datatype=DataType.Int32, int_value=1)
    metric.properties.keys.extend(["a", "b"])
    metric.properties.values.add(type=DataType.Int32, int_value=1)
    cases.append((keys.SerializeToString(), "property set has 2 keys and 1 values"))
    twice = pb.Payload()
    metric = twice.metrics.add(name="x", datatype=DataType.Int32, int_value=1)
    metric.properties.keys.extend(["a", "a"])
    metric.properties.values.add(type=DataType.Int32, int_value=1)
    metric.properties.values.add(type=DataType.Int32, int_value=2)
    cases.append((twice.SerializeToString(), "property 'a' appears twice"))
    row = pb.Payload()
    dataset = row.metrics.add(name="x", datatype=DataType.DataSet).dataset_value
    dataset.columns.extend(["a", "b"])
    dataset.types.extend([DataType.Int32, DataType.Int32])
    dataset.rows.add().elements.add(int_value=1)
    cases.append((row.SerializeToString(), "DataSet row 0 has 1 elements, not 2"))
    return cases


@pytest.mark.parametrize(("data", "why"), [
    (b"\x12\x10\x0a", "not a Sparkplug B payload"),  # truncated metric
    (b"\x08", "not a Sparkplug B payload"),  # truncated varint
    (b"\x0f", "not a Sparkplug B payload"),  # wire type 7 does not exist
    (b"\x12\x03\x0a\x01\xff", r"metric 0: name is not valid UTF-8"),
    (b"\x22\x01\xff", "uuid is not valid UTF-8"),
    (b"\x12\x05\x20\x0c\x7a\x01\xff", "string_value is not valid UTF-8"),
    *malformed_protobuf(),
])
def test_malformed_bytes_raise(data: bytes, why: str) -> None:
    assert re.search(why, failure(data))


def test_a_bad_metric_leaves_the_others_of_its_payload(tahu: TahuCodec) -> None:
    payload = decode(tahu.encode({"timestamp": NOW, "metrics": [
        {"name": "good", "type": "Int32", "value": -5},
        {"name": "bad", "alias": 3, "type": "UInt16", "value": 70000, "datatype": 6}]}))
    good, bad = payload.metrics
    assert (good.value, good.error) == (-5, None)
    assert (bad.name, bad.alias, bad.value) == ("bad", 3, None)
    assert bad.error is not None and "metric 1 ('bad')" in bad.error


@pytest.mark.parametrize(("value", "datatype", "expected"), [
    (233, DataType.Int8, -23),  # two's complement of the type's width
    (4294967273, DataType.Int8, -23),  # sign-extended to 32 bits (Tahu)
    (255, DataType.Int8, -1),
    (128, DataType.Int8, -128),
    (4294967168, DataType.Int8, -128),
    (65236, DataType.Int16, -300),
    (4294966996, DataType.Int16, -300),
    (4294967295, DataType.Int32, -1),
])
def test_signed_values_in_either_twos_complement_form(value: int, datatype: DataType,
                                                      expected: int) -> None:
    assert typed_value("int_value", value, datatype) == expected


@pytest.mark.parametrize(("value", "datatype"), [
    (256, DataType.Int8), (4294967167, DataType.Int8), (65536, DataType.Int16),
    (4294934527, DataType.Int16),
])
def test_signed_values_in_neither_form_are_out_of_range(value: int,
                                                         datatype: DataType) -> None:
    with pytest.raises(SparkplugError, match="out of range"):
        typed_value("int_value", value, datatype)


@pytest.fixture(scope="module")
def rich_payload(tahu: TahuCodec) -> bytes:
    """A payload with most structures in it, for the mutation fuzz."""
    return tahu.encode({"timestamp": NOW, "seq": 9, "uuid": "u", "metrics": [
        {"name": "a", "alias": 1, "type": "Int16", "value": -2,
         "properties": {"engUnit": {"type": "String", "value": "m"},
                        "set": {"type": "PropertySet", "value": {
                            "x": {"type": "Int8", "value": -1}}}}},
        {"alias": 2, "type": "Int64", "value": -9, "omitDatatype": True},
        {"name": "b", "type": "BooleanArray", "value": [True, False, True]},
        {"name": "s", "type": "StringArray", "value": ["x", "yz"]},
        {"name": "d", "type": "DataSet", "value": {
            "numOfColumns": 2, "columns": ["i", "s"], "types": ["Int8", "String"],
            "rows": [[-1, "r"]]}},
        {"name": "t", "type": "Template", "value": {
            "templateRef": "T", "isDefinition": False,
            "metrics": [{"name": "m", "type": "UInt8", "value": 3}],
            "parameters": [{"name": "p", "type": "Int8", "value": -4}]}},
        {"name": "n", "type": "Double", "value": None},
    ]})


def assert_plain(value: object) -> None:
    """Decoded values are our dataclasses and plain Python values, never protobuf objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            assert_plain(getattr(value, item.name))
    elif isinstance(value, tuple | list):
        for item in value:
            assert_plain(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain(item)
    else:
        assert isinstance(value, bool | int | float | str | bytes | None), type(value)


def test_every_truncation_of_a_payload_decodes_or_raises(rich_payload: bytes) -> None:
    assert_plain(decode(rich_payload))
    assert len(decode(rich_payload).metrics) == 7
    for end in range(len(rich_payload)):
        with contextlib.suppress(SparkplugError):
            assert_plain(decode(rich_payload[:end]))


@settings(PROPERTIES, max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_sparkplug_error(data: bytes) -> None:
    with contextlib.suppress(SparkplugError):
        assert_plain(decode(data))


@settings(PROPERTIES, max_examples=400)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                max_size=4))
def test_mutated_payloads_decode_or_raise_sparkplug_error(
        rich_payload: bytes, changes: list[tuple[int, int]]) -> None:
    data = bytearray(rich_payload)
    for where, byte in changes:
        data[where % len(data)] = byte
    with contextlib.suppress(SparkplugError):
        assert_plain(decode(bytes(data)))
