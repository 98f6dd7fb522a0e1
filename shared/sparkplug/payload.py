"""Sparkplug B payloads: bytes from an edge node into plain frozen values (`decode`), and the
commands a host sends, NCMD and DCMD, into bytes (`encode`).

Protobuf objects never leave this module, nor do protobuf's or struct's errors: anything
malformed raises `SparkplugError` saying where and what ("metric 3 ('Speed'): Int8 value 300
out of range"). Values are read by the metric's datatype as Sparkplug 3.0 carries them:

- Int8/16/32 in `int_value` (uint32) and Int64 in `long_value` (uint64), two's complement.
  For Int8/16 the specification leaves open whether the complement is of the type's width
  (-23 as 233) or of 32 bits (-23 as 4294967273, what Eclipse Tahu sends): both are read,
  anything else is out of range. `encode` sends the 32-bit form, which Tahu reads too.
- UInt32 in `int_value`, as the specification says; Tahu's encoders use `long_value`, so
  that is read too (below 2**32).
- DateTime: milliseconds since the epoch in `long_value`.
- the array types: little-endian packed in `bytes_value`, read into tuples.

A DATA metric may leave its datatype out (the host knows it, by alias, from the birth): it
keeps `datatype=None`, the raw protobuf field and value (`raw_field`, `raw_value`) and the raw
value as `value`; `resolve(metric, datatype)` types it once the host has looked it up.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import TypeAlias

from google.protobuf.message import DecodeError

from shared.sparkplug import SparkplugError
from shared.sparkplug import sparkplug_b_pb2 as pb

__all__ = [
    "DataSet",
    "DataType",
    "MetaData",
    "Metric",
    "Payload",
    "SparkplugError",
    "Template",
    "TemplateParameter",
    "data_type",
    "decode",
    "resolve",
    "typed_value",
]

_U32 = 1 << 32
_U64 = 1 << 64
FLOAT32_MAX = 3.4028234663852886e38


class DataType(IntEnum):
    """The Sparkplug B datatypes (Metric.datatype, PropertyValue.type, DataSet.types)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


_BY_VALUE = {t.value: t for t in DataType}
_DATATYPES = frozenset(t.value for t in DataType if t is not DataType.Unknown)
# DataSet columns and template parameters take these only ("basic types" in the spec).
_BASIC = frozenset(DataType(n) for n in range(DataType.Int8, DataType.Text + 1))

Scalar: TypeAlias = bool | int | float | str | bytes
ArrayValue: TypeAlias = tuple[int, ...] | tuple[float, ...] | tuple[bool, ...] | tuple[str, ...]
# What a property holds: a scalar, a nested PropertySet or a PropertySetList.
PropertyValue: TypeAlias = (
    "Scalar | Mapping[str, PropertyValue] | tuple[Mapping[str, PropertyValue], ...] | None"
)
Value: TypeAlias = "Scalar | ArrayValue | DataSet | Template | None"
# What the metric's protobuf value field held, decoded no further than its wire type.
RawValue: TypeAlias = "Scalar | DataSet | Template | None"


@dataclass(frozen=True, slots=True)
class DataSet:
    columns: tuple[str, ...]
    types: tuple[DataType, ...]
    rows: tuple[tuple[Scalar | None, ...], ...]  # an element with no value is None


@dataclass(frozen=True, slots=True)
class TemplateParameter:
    name: str | None
    datatype: DataType | None
    value: Scalar | None


@dataclass(frozen=True, slots=True)
class Template:
    version: str | None
    template_ref: str | None  # an instance's definition; None on a definition
    is_definition: bool
    metrics: tuple[Metric, ...]
    parameters: tuple[TemplateParameter, ...]


@dataclass(frozen=True, slots=True)
class MetaData:
    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None
    alias: int | None
    timestamp: int | None
    datatype: DataType | None
    value: Value
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    metadata: MetaData | None = None
    raw_field: str | None = None  # the protobuf value field that was set ("int_value"...)
    raw_value: RawValue = None
    # Set when this metric does not decode (a value out of its datatype's range...): the
    # payload's other metrics still stand (`value` is then None).
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None
    seq: int | None
    uuid: str | None
    body: bytes | None
    metrics: tuple[Metric, ...]


def data_type(value: int) -> DataType:
    # A dict, not DataType(value): the Enum call was a tenth of the host's decoding time.
    kind = _BY_VALUE.get(value)
    if kind is None:
        raise SparkplugError(f"unknown datatype {value}")
    return kind


# ---- decoding --------------------------------------------------------------------------


def decode(data: bytes) -> Payload:
    """A Sparkplug B payload (NBIRTH, NDATA, DBIRTH, DDATA, NDEATH, ...) as plain values."""
    message = pb.Payload()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from None
    # protobuf bounds nesting (100 levels), so our walk of it cannot recurse too deep.
    return Payload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        uuid=_text(message.uuid, "uuid") if message.HasField("uuid") else None,
        body=message.body if message.HasField("body") else None,
        metrics=_metrics(message.metrics, "metric", lenient=True),
    )


def typed_value(raw_field: str | None, raw_value: RawValue, datatype: int) -> Value:
    """The value a protobuf value field (`raw_field`, holding `raw_value`) carries for a metric
    (or property, parameter, DataSet element) of `datatype`; SparkplugError if it cannot."""
    kind = data_type(datatype)
    rule = _RULES.get(kind)
    if rule is None:
        raise SparkplugError(f"{kind.name} is not a value datatype")
    fields, convert = rule
    if raw_field is None:
        raise SparkplugError(f"{kind.name} has no value and is_null is not set")
    if raw_field not in fields:
        raise SparkplugError(f"{kind.name} value in {raw_field}, expected {' or '.join(fields)}")
    return convert(kind, raw_value)


def resolve(metric: Metric, datatype: int) -> Metric:
    """`metric` typed by the `datatype` its birth gave it (a DATA metric sent without one)."""
    kind = data_type(datatype)
    if metric.datatype is not None and metric.datatype != kind:
        raise SparkplugError(f"metric {label(metric.name, metric.alias)} is "
                             f"{metric.datatype.name}, its birth says {kind.name}")
    try:
        value = None if metric.is_null else typed_value(metric.raw_field, metric.raw_value, kind)
    except SparkplugError as exc:
        raise SparkplugError(f"metric {label(metric.name, metric.alias)}: {exc}") from None
    return replace(metric, datatype=kind, value=value)


def label(name: str | None, alias: int | None) -> str:
    return repr(name) if name is not None else f"alias {alias}" if alias is not None else "?"


def _metrics(items: Iterable[pb.Payload.Metric], what: str, lenient: bool = False
             ) -> tuple[Metric, ...]:
    """The metrics; `lenient`: one that does not decode is kept with its `error` (and its
    name, alias and datatype when those read), else it fails the whole payload."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(_metric(item))
        except SparkplugError as exc:
            name = item.name if item.HasField("name") and isinstance(item.name, str) else None
            alias = item.alias if item.HasField("alias") else None
            known = name is not None or alias is not None
            where = f"{what} {index}" + (f" ({label(name, alias)})" if known else "")
            if not lenient:
                raise SparkplugError(f"{where}: {exc}") from None
            datatype = DataType(item.datatype) if item.datatype in _DATATYPES else None
            out.append(Metric(name=name, alias=alias, timestamp=None, datatype=datatype,
                              value=None, error=f"{where}: {exc}"))
    return tuple(out)


def _metric(item: pb.Payload.Metric) -> Metric:
    raw_field = item.WhichOneof("value")
    raw_value = _raw(item, raw_field)
    # Unknown (0) is what a stripped datatype reads as in most stacks: treat it as absent.
    datatype = data_type(item.datatype) if item.datatype else None
    is_null = item.is_null
    if is_null:
        value: Value = None
    elif datatype is None:
        value = raw_value
    else:
        value = typed_value(raw_field, raw_value, datatype)
    return Metric(
        name=_text(item.name, "name") if item.HasField("name") else None,
        alias=item.alias if item.HasField("alias") else None,
        timestamp=item.timestamp if item.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_historical=item.is_historical,
        is_transient=item.is_transient,
        is_null=is_null,
        properties=_properties(item.properties) if item.HasField("properties") else {},
        metadata=_metadata(item.metadata) if item.HasField("metadata") else None,
        raw_field=raw_field,
        raw_value=raw_value,
    )


def _raw(item: pb.Payload.Metric, raw_field: str | None) -> RawValue:
    if raw_field is None or raw_field == "extension_value":
        return None
    if raw_field == "dataset_value":
        return _dataset(item.dataset_value)
    if raw_field == "template_value":
        return _template(item.template_value)
    value: Scalar = getattr(item, raw_field)
    return _text(value, raw_field) if raw_field == "string_value" else value


def _text(value: object, what: str) -> str:
    # upb hands proto2 strings that are not UTF-8 back as bytes.
    if not isinstance(value, str):
        raise SparkplugError(f"{what} is not valid UTF-8")
    return value


def _scalar(item: pb.Payload.DataSet.DataSetValue | pb.Payload.Template.Parameter
            | pb.Payload.PropertyValue) -> tuple[str | None, Scalar | None]:
    raw_field = item.WhichOneof("value")
    if raw_field is None or raw_field == "extension_value":
        return raw_field, None
    value: Scalar = getattr(item, raw_field)
    return raw_field, _text(value, raw_field) if raw_field == "string_value" else value


def _basic(value: int, what: str) -> DataType:
    kind = data_type(value)
    if kind not in _BASIC:
        raise SparkplugError(f"{what} type {kind.name} is not a basic type")
    return kind


def _dataset(item: pb.Payload.DataSet) -> DataSet:
    columns = tuple(_text(c, "DataSet column name") for c in item.columns)
    types = tuple(_basic(t, f"DataSet column {i}") for i, t in enumerate(item.types))
    if len(columns) != len(types) or (item.HasField("num_of_columns")
                                      and item.num_of_columns != len(types)):
        raise SparkplugError(f"DataSet has {len(columns)} column names, {len(types)} types"
                             + (f" and num_of_columns {item.num_of_columns}"
                                if item.HasField("num_of_columns") else ""))
    rows = []
    for r, row in enumerate(item.rows):
        if len(row.elements) != len(types):
            raise SparkplugError(f"DataSet row {r} has {len(row.elements)} elements, "
                                 f"not {len(types)}")
        values: list[Scalar | None] = []
        for c, element in enumerate(row.elements):
            raw_field, raw_value = _scalar(element)
            try:
                values.append(None if raw_field is None
                              else _as_scalar(typed_value(raw_field, raw_value, types[c])))
            except SparkplugError as exc:
                raise SparkplugError(f"DataSet row {r} column {c}: {exc}") from None
        rows.append(tuple(values))
    return DataSet(columns=columns, types=types, rows=tuple(rows))


def _as_scalar(value: Value) -> Scalar:
    # Basic types decode to scalars only; this narrows the type for mypy.
    assert isinstance(value, bool | int | float | str | bytes)
    return value


def _template(item: pb.Payload.Template) -> Template:
    parameters = []
    for index, parameter in enumerate(item.parameters):
        try:
            kind = _basic(parameter.type, "parameter") if parameter.HasField("type") else None
            raw_field, raw_value = _scalar(parameter)
            value = (raw_value if kind is None or raw_field is None
                     else _as_scalar(typed_value(raw_field, raw_value, kind)))
            name = _text(parameter.name, "name") if parameter.HasField("name") else None
        except SparkplugError as exc:
            raise SparkplugError(f"template parameter {index}: {exc}") from None
        parameters.append(TemplateParameter(name=name, datatype=kind, value=value))
    return Template(
        version=_text(item.version, "template version") if item.HasField("version") else None,
        template_ref=(_text(item.template_ref, "template_ref")
                      if item.HasField("template_ref") else None),
        is_definition=item.is_definition,
        metrics=_metrics(item.metrics, "template metric"),
        parameters=tuple(parameters),
    )


def _properties(item: pb.Payload.PropertySet) -> dict[str, PropertyValue]:
    if len(item.keys) != len(item.values):
        raise SparkplugError(f"property set has {len(item.keys)} keys and "
                             f"{len(item.values)} values")
    out: dict[str, PropertyValue] = {}
    for key, value in zip(item.keys, item.values, strict=True):
        key = _text(key, "property key")
        if key in out:
            raise SparkplugError(f"property {key!r} appears twice")
        try:
            out[key] = _property(value)
        except SparkplugError as exc:
            raise SparkplugError(f"property {key!r}: {exc}") from None
    return out


def _property(item: pb.Payload.PropertyValue) -> PropertyValue:
    if item.is_null:
        return None
    raw_field = item.WhichOneof("value")
    kind = data_type(item.type) if item.HasField("type") else None
    if raw_field == "propertyset_value" and kind in (None, DataType.PropertySet):
        return _properties(item.propertyset_value)
    if raw_field == "propertysets_value" and kind in (None, DataType.PropertySetList):
        return tuple(_properties(s) for s in item.propertysets_value.propertyset)
    if kind in (DataType.PropertySet, DataType.PropertySetList):
        raise SparkplugError(f"{kind.name} value in {raw_field}" if raw_field else
                             f"{kind.name} property has no value and is_null is not set")
    raw_field, raw_value = _scalar(item)
    if kind is None:
        return raw_value
    return _as_scalar(typed_value(raw_field, raw_value, _basic(kind, "property")))


def _metadata(item: pb.Payload.MetaData) -> MetaData:
    def text(name: str) -> str | None:
        return _text(getattr(item, name), f"metadata {name}") if item.HasField(name) else None

    return MetaData(
        is_multi_part=item.is_multi_part if item.HasField("is_multi_part") else None,
        content_type=text("content_type"),
        size=item.size if item.HasField("size") else None,
        seq=item.seq if item.HasField("seq") else None,
        file_name=text("file_name"),
        file_type=text("file_type"),
        md5=text("md5"),
        description=text("description"),
    )


# ---- the datatype rules: which field carries each type, and how its value reads --------


def _int(kind: DataType, value: RawValue) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SparkplugError(f"{kind.name} value {value!r} is not an integer")
    return value


def _signed(kind: DataType, value: RawValue) -> int:
    number = _int(kind, value)
    bits = WIDTH[kind]
    half = 1 << (bits - 1)
    if number < half:
        return number
    if number < 2 * half:  # two's complement of the type's width
        return number - 2 * half
    if bits < 32 and number >= _U32 - half:  # sign-extended to 32 bits (Tahu)
        return number - _U32
    raise SparkplugError(f"{kind.name} value {number} out of range")


def _unsigned(kind: DataType, value: RawValue) -> int:
    number = _int(kind, value)
    if number >= 1 << WIDTH[kind]:
        raise SparkplugError(f"{kind.name} value {number} out of range")
    return number


def _float(kind: DataType, value: RawValue) -> float:
    if not isinstance(value, float):
        raise SparkplugError(f"{kind.name} value {value!r} is not a number")
    return value


def _bool(kind: DataType, value: RawValue) -> bool:
    if not isinstance(value, bool):
        raise SparkplugError(f"{kind.name} value {value!r} is not a boolean")
    return value


def _str(kind: DataType, value: RawValue) -> str:
    if not isinstance(value, str):
        raise SparkplugError(f"{kind.name} value {value!r} is not a string")
    return value


def _bytes(kind: DataType, value: RawValue) -> bytes:
    if not isinstance(value, bytes):
        raise SparkplugError(f"{kind.name} value {value!r} is not bytes")
    return value


def _typed(cls: type[DataSet] | type[Template]) -> Callable[[DataType, RawValue], Value]:
    def convert(kind: DataType, value: RawValue) -> Value:
        if not isinstance(value, cls):
            raise SparkplugError(f"{kind.name} value {value!r} is not a {cls.__name__}")
        return value
    return convert


WIDTH = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64,
          DataType.UInt8: 8, DataType.UInt16: 16, DataType.UInt32: 32, DataType.UInt64: 64,
          DataType.DateTime: 64}

# struct codes of the fixed-size array types (BooleanArray and StringArray are special).
PACKED = {DataType.Int8Array: "b", DataType.Int16Array: "h", DataType.Int32Array: "i",
           DataType.Int64Array: "q", DataType.UInt8Array: "B", DataType.UInt16Array: "H",
           DataType.UInt32Array: "I", DataType.UInt64Array: "Q", DataType.FloatArray: "f",
           DataType.DoubleArray: "d", DataType.DateTimeArray: "q"}


def _array(kind: DataType, value: RawValue) -> ArrayValue:
    data = _bytes(kind, value)
    if kind == DataType.BooleanArray:
        return _unpack_booleans(data)
    if kind == DataType.StringArray:
        return _unpack_strings(data)
    code = PACKED[kind]
    size = struct.calcsize(code)
    if len(data) % size:
        raise SparkplugError(f"{kind.name} of {len(data)} bytes: not a whole number of "
                             f"{size}-byte values")
    values: ArrayValue = struct.unpack(f"<{len(data) // size}{code}", data)
    return values


def _unpack_booleans(data: bytes) -> tuple[bool, ...]:
    # A little-endian uint32 count, then the values 8 a byte, most significant bit first.
    if len(data) < 4:
        raise SparkplugError(f"BooleanArray of {len(data)} bytes has no 4-byte count")
    count = int.from_bytes(data[:4], "little")
    bits = data[4:]
    if len(bits) != (count + 7) // 8:
        raise SparkplugError(f"BooleanArray of {count} values in {len(bits)} bytes, "
                             f"not {(count + 7) // 8}")
    return tuple(bool(bits[i >> 3] & (0x80 >> (i & 7))) for i in range(count))


def _unpack_strings(data: bytes) -> tuple[str, ...]:
    # UTF-8 strings, each ended by a NUL.
    if not data:
        return ()
    if not data.endswith(b"\0"):
        raise SparkplugError("StringArray does not end with a NUL")
    try:
        return tuple(data[:-1].decode("utf-8").split("\0"))
    except UnicodeDecodeError:
        raise SparkplugError("StringArray is not valid UTF-8") from None


_Rule = tuple[tuple[str, ...], Callable[[DataType, RawValue], Value]]
_INT, _LONG = ("int_value",), ("long_value",)
_RULES: dict[DataType, _Rule] = {
    DataType.Int8: (_INT, _signed),
    DataType.Int16: (_INT, _signed),
    DataType.Int32: (_INT, _signed),
    DataType.Int64: (_LONG, _signed),
    DataType.UInt8: (_INT, _unsigned),
    DataType.UInt16: (_INT, _unsigned),
    DataType.UInt32: (("int_value", "long_value"), _unsigned),
    DataType.UInt64: (_LONG, _unsigned),
    DataType.DateTime: (_LONG, _unsigned),
    DataType.Float: (("float_value",), _float),
    DataType.Double: (("double_value",), _float),
    DataType.Boolean: (("boolean_value",), _bool),
    DataType.String: (("string_value",), _str),
    DataType.Text: (("string_value",), _str),
    DataType.UUID: (("string_value",), _str),
    DataType.Bytes: (("bytes_value",), _bytes),
    DataType.File: (("bytes_value",), _bytes),
    DataType.DataSet: (("dataset_value",), _typed(DataSet)),
    DataType.Template: (("template_value",), _typed(Template)),
    **{kind: (("bytes_value",), _array) for kind in (
        *PACKED, DataType.BooleanArray, DataType.StringArray)},
}
