"""The reading format of the MQTT contract (design section 3), parsed and validated.

`parse_reading_payload` turns the bytes of `insa/devices/<id>/telemetry` into
`Reading`s; `parse_metric_payload` does the same for `.../telemetry/<metric>`,
and `parse_status_payload` for `.../status`. Anything unacceptable raises
`ValidationFailed` with a stable `reason` label.

Timestamps: ISO 8601 text with a zone, or an epoch number (`_epoch`: seconds, or
milliseconds above 2·10¹⁰; never negative), within `Limits`' bounds around the ingestor's
clock (`shared.readings.bounded_timestamp`). The usual reading takes a path without
pydantic first (shared/plain_readings.py); the parsed types are in shared/readings.py.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from shared.errors import ValidationFailed
from shared.mqtt import RESERVED_PREFIX, is_reserved_name
from shared.plain_readings import plain_reading
from shared.readings import (
    EPOCH_MS_ABOVE,
    NOT_A_VALUE,
    RESERVED_KEYS,
    VALID_NAMES_MAX,
    Limits,
    Reading,
    StatusChange,
    Value,
    bounded_timestamp,
    check_name,
    reading_of,
)

NON_FINITE_WORDS = (b"nan", b"infinity", b"inf", b"-infinity", b"-inf", b"+inf")
NON_FINITE_TOKEN = re.compile(rb"(?i)(?:^|[:\[,])\s*[-+]?(?:nan|infinity|inf)\s*(?:$|[,\]}])")
STATUSES = frozenset({"online", "offline"})
# What pydantic would read as an epoch in a string; an ISO time never matches.
EPOCH_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def _epoch(raw: Any) -> Any:
    """A `ts` given as a number (or numeric text) → an aware datetime, by our rule rather
    than pydantic's (which reads -3e10 as milliseconds and -1 as 1969). ISO text is left
    to pydantic; `_timestamp` then bounds both. Runs once per reading, not per value."""
    kind = type(raw)
    if kind is str:
        if ":" in raw or not EPOCH_TEXT.fullmatch(raw):
            return raw
        raw = float(raw)
    elif kind is bool:
        raise PydanticCustomError("datetime_type", "a bool is not a timestamp")
    elif kind is not int and kind is not float:
        return raw  # pydantic says what is wrong with it
    if raw < 0:
        raise PydanticCustomError("datetime_epoch", "epoch before 1970: negative number {raw}",
                                  {"raw": raw})
    try:  # fromtimestamp() rounds to the microsecond: exact for whole milliseconds
        return datetime.fromtimestamp(raw / 1000 if raw > EPOCH_MS_ABOVE else raw, UTC)
    except (OverflowError, ValueError, OSError):
        raise PydanticCustomError("datetime_epoch", "epoch number {raw} is out of range",
                                  {"raw": raw}) from None


Timestamp = Annotated[AwareDatetime, BeforeValidator(_epoch)]


class MetricObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: bool | int | float | str
    unit: str | None = Field(None, max_length=32, pattern=r"^[^\x00]*$")
    quality: int | None = Field(None, ge=0, le=32767)
    ts: Timestamp | None = None


MetricValue = bool | int | float | str | MetricObject


class ReadingModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    ts: Timestamp | None = Field(None, alias="timestamp")
    seq: int | None = Field(None, ge=0)
    device_id: str | None = None
    telemetry: dict[str, MetricValue] | None = None
    metadata: dict[str, Any] | None = None


class StatusModel(BaseModel):
    status: str
    ts: Timestamp | None = Field(None, alias="timestamp")
    model_config = ConfigDict(populate_by_name=True, extra="allow")


UNION_MEMBERS = frozenset({"bool", "int", "float", "str", "MetricObject"})
_reading = TypeAdapter(ReadingModel)
_flat_values = TypeAdapter(dict[str, MetricValue])
_metric_value = TypeAdapter(MetricValue)
_status = TypeAdapter(StatusModel)
_timestamp_text = TypeAdapter(Timestamp)


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN/Infinity tokens and numbers that overflow to infinity.
        if "infinity" in str(exc) or NON_FINITE_TOKEN.search(payload):
            raise ValidationFailed("non_finite_number",
                                   "NaN and Infinity are not accepted values") from None
        raise ValidationFailed("invalid_json", f"payload is not valid JSON: {exc}") from None


def _is_timestamp_error(error: Any) -> bool:
    return "datetime" in error["type"] or "timezone" in error["type"]


def _pydantic_reason(exc: PydanticValidationError) -> ValidationFailed:
    errors = exc.errors(include_url=False)
    # A value object whose ts is bad fails every member of the value union; its ts error
    # says what is wrong, not the first member's ("not a bool").
    first = next((e for e in errors if _is_timestamp_error(e)), errors[0])
    loc = [str(p) for p in first["loc"]]
    if loc and loc[-1] in UNION_MEMBERS:  # a metric value matching none of the union
        where = ".".join(loc[:-1])
        return ValidationFailed("schema_violation", f"{where}: {NOT_A_VALUE}",
                                field=where or None)
    where = ".".join(p for p in loc if p != "MetricObject") or "payload"
    reason = "invalid_timestamp" if _is_timestamp_error(first) else "schema_violation"
    return ValidationFailed(reason, f"{where}: {first['msg']}", field=where)


def _value(metric: str, raw: MetricValue) -> Value:
    check_name("metric", metric, "telemetry")  # a reading's key (a topic's is checked first)
    quality = unit = None
    # An exact type check: isinstance() against a pydantic model goes through its
    # metaclass in Python and was 7% of the ingestor's CPU.
    if type(raw) is MetricObject:
        quality, unit, raw = raw.quality, raw.unit, raw.value
    if isinstance(raw, bool):
        return Value(metric, 1.0 if raw else 0.0, None, quality, unit)
    if isinstance(raw, int | float):
        number = float(raw)
        if not math.isfinite(number):
            raise ValidationFailed("non_finite_number", f"{metric}: value is not finite",
                                   field=metric)
        return Value(metric, number, None, quality, unit)
    assert isinstance(raw, str)
    if "\x00" in raw:
        raise ValidationFailed("schema_violation", f"{metric}: text contains a NUL character",
                               field=metric)
    return Value(metric, None, raw, quality, unit)


def parse_timestamp(text: str, limits: Limits) -> datetime:
    """A timestamp on its own (a CSV cell): ISO 8601 with offset, or epoch s or ms."""
    try:
        ts = _timestamp_text.validate_python(text)
    except PydanticValidationError as exc:
        raise _pydantic_reason(exc) from None
    return bounded_timestamp(ts, datetime.now(UTC), limits)


def _one_reading(obj: Any, device_id: str, received: datetime, limits: Limits) -> Reading:
    if type(obj) is dict and (plain := plain_reading(obj, received, limits)) is not None:
        return plain
    if not isinstance(obj, dict):
        raise ValidationFailed("schema_violation", "a reading must be a JSON object")
    try:
        model = _reading.validate_python(obj)
        if model.telemetry is None:
            flat = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
            raw_values = _flat_values.validate_python(flat)
        else:
            raw_values = model.telemetry
    except PydanticValidationError as exc:
        raise _pydantic_reason(exc) from None
    if model.device_id is not None and model.device_id != device_id:
        raise ValidationFailed("device_id_mismatch",
                               f"payload device_id {model.device_id[:64]!r} does not match "
                               f"topic device {device_id!r}", field="device_id")
    if not raw_values:
        raise ValidationFailed("no_values", "reading carries no metric values",
                               field="telemetry")
    if len(raw_values) > limits.max_values_per_reading:
        raise ValidationFailed("too_many_values",
                               f"{len(raw_values)} values > {limits.max_values_per_reading}",
                               field="telemetry")
    values = [_value(name, raw) for name, raw in raw_values.items()]
    if any(type(raw) is MetricObject and raw.ts is not None for raw in raw_values.values()):
        raise ValidationFailed("schema_violation", "a value's own ts is only accepted on "
                               ".../telemetry/<metric>; give the reading its ts instead")
    return reading_of(bounded_timestamp(model.ts, received, limits), model.seq, values)


def parse_reading_payload(payload: bytes, device_id: str, received: datetime,
                          limits: Limits) -> list[Reading]:
    """A reading, a flat reading, or an array of them (a store-and-forward backlog)."""
    return _readings(_loads(payload), device_id, received, limits)


def parse_gateway_payload(payload: bytes, received: datetime, limits: Limits
                          ) -> list[tuple[str, list[Reading] | ValidationFailed]]:
    """A gateway's batch, `{"<device>": <what the device's own telemetry takes>, ...}`:
    each child's readings, or why its part is refused (the others stand)."""
    obj = _loads(payload)
    if not isinstance(obj, dict):
        raise ValidationFailed("schema_violation",
                               "a gateway's telemetry must be a JSON object keyed by device id")
    if not obj:
        raise ValidationFailed("no_values", "no devices in the gateway's message")
    if len(obj) > limits.max_readings_per_message:
        raise ValidationFailed("too_many_values",
                               f"{len(obj)} devices > {limits.max_readings_per_message}")
    parts: list[tuple[str, list[Reading] | ValidationFailed]] = []
    for device_id, part in obj.items():
        try:
            check_device_id(device_id)
            parts.append((device_id, _readings(part, device_id, received, limits)))
        except ValidationFailed as exc:
            parts.append((device_id, exc))
    return parts


def _readings(obj: Any, device_id: str, received: datetime, limits: Limits) -> list[Reading]:
    if isinstance(obj, list):
        if not obj:
            raise ValidationFailed("no_values", "empty array of readings")
        if len(obj) > limits.max_readings_per_message:
            raise ValidationFailed("too_many_values",
                                   f"{len(obj)} readings > {limits.max_readings_per_message}")
        readings = [_one_reading(item, device_id, received, limits) for item in obj]
        if len(obj) > 1 and any(isinstance(item, dict) and "ts" not in item
                                and "timestamp" not in item for item in obj):
            # They would all get the receive time and collapse into one stored reading.
            raise ValidationFailed("missing_timestamp",
                                   "every reading of a backlog array needs its own ts")
        return readings
    return [_one_reading(obj, device_id, received, limits)]


def parse_metric_payload(payload: bytes, metric: str, received: datetime,
                         limits: Limits) -> Reading:
    """`.../telemetry/<metric>`: a bare JSON scalar, bare text, or {value, ts, unit, quality}."""
    check_name("metric", metric)
    stripped = payload.strip()
    try:
        obj = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        if stripped.lower() in NON_FINITE_WORDS:
            raise ValidationFailed("non_finite_number",
                                   "NaN and Infinity are not accepted values") from None
        try:
            obj = stripped.decode()
        except UnicodeDecodeError:
            raise ValidationFailed("invalid_encoding", "payload is not UTF-8 text") from None
    try:
        raw = _metric_value.validate_python(obj)
    except PydanticValidationError as exc:
        raise _pydantic_reason(exc) from None
    ts = raw.ts if isinstance(raw, MetricObject) else None
    return reading_of(bounded_timestamp(ts, received, limits), None, [_value(metric, raw)])


def parse_status_payload(payload: bytes, received: datetime, limits: Limits) -> StatusChange:
    """`online` / `offline` as bare text or JSON string, or {"status": ..., "ts": ...}."""
    text = payload.strip()
    status: str
    ts: datetime | None = None
    if text.startswith(b"{"):
        try:
            model = _status.validate_python(_loads(text))
        except PydanticValidationError as exc:
            raise _pydantic_reason(exc) from None
        status, ts = model.status, model.ts
    else:
        status = text.strip(b'"').decode(errors="replace")
    status = status.lower()
    if status not in STATUSES:
        raise ValidationFailed("bad_status", f"status must be online or offline, not "
                                             f"{status[:32]!r}")
    return StatusChange(status == "online", bounded_timestamp(ts, received, limits))


_valid_devices: set[str] = set()  # ids seen valid: every message names one


def check_device_id(device_id: str) -> None:
    """The contract's pattern (so no `/`, `+` or `#` that would widen a device's topics)
    and not a name of the platform's own broker accounts."""
    if device_id in _valid_devices:
        return
    check_name("device", device_id)
    if is_reserved_name(device_id):
        raise ValidationFailed("bad_device_name", f"device ids starting with "
                                                  f"{RESERVED_PREFIX!r} (in any case) are "
                                                  "reserved for the platform's own accounts")
    if len(_valid_devices) < VALID_NAMES_MAX:
        _valid_devices.add(device_id)
