"""The usual reading read without pydantic: the ingestor's fast path.

`plain_reading` takes what orjson gave for `{"ts", "seq", "telemetry": {name: value}}` (or
a flat reading) and returns its `Reading`, or None when anything about it is unusual. The
full parse (shared/schemas.py) then accepts or rejects it, so every reject's reason and
detail are the full parse's; the one reject raised here (a value of no accepted kind) is
word for word the full parse's too. tests/shared/test_plain_readings.py checks both agree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from shared.errors import ValidationFailed
from shared.readings import (
    EPOCH_MS_ABOVE,
    NOT_A_VALUE,
    RESERVED_KEYS,
    Limits,
    Reading,
    Value,
    bounded_timestamp,
    name_ok,
    valid_names,
)

# ISO 8601 as devices write it, which datetime.fromisoformat and pydantic read alike.
PLAIN_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
PLAIN_KEYS = frozenset({"ts", "seq", "telemetry"})
FLOAT = frozenset({float})
OBJECT_KEYS = frozenset({"value", "unit", "quality"})


def plain_value(metric: str, raw: Any) -> Value | None:
    """A value of the usual kinds, or None for anything else (left to the full parse)."""
    kind = type(raw)
    if kind is float or kind is int:
        return Value(metric, float(raw), None, None, None)
    if kind is str:
        return None if "\x00" in raw else Value(metric, None, raw, None, None)
    if kind is bool:
        return Value(metric, 1.0 if raw else 0.0, None, None, None)
    if kind is not dict or not raw.keys() <= OBJECT_KEYS:
        return None
    unit, quality = raw.get("unit"), raw.get("quality")
    if unit is not None and (type(unit) is not str or len(unit) > 32 or "\x00" in unit):
        return None
    if quality is not None and (type(quality) is not int or not 0 <= quality <= 32767):
        return None
    value = plain_value(metric, raw.get("value"))
    if value is not None:
        value.unit, value.quality = unit, quality
    return value


def plain_reading(obj: dict[str, Any], received: datetime, limits: Limits) -> Reading | None:
    """The common reading (`{"ts", "seq", "telemetry": {name: number, ...}}`, or flat) read
    without pydantic, or None when anything about it is unusual: the full parse then
    accepts or rejects it, so a reject's reason and detail are always the full parse's
    (a value of no accepted kind raises here the reject the full parse would)."""
    values = obj.get("telemetry")
    if values is None:
        values = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
        if any(k not in PLAIN_KEYS for k in obj.keys() & RESERVED_KEYS):
            return None
    elif type(values) is not dict or not obj.keys() <= PLAIN_KEYS:
        return None
    if not values or len(values) > limits.max_values_per_reading:
        return None
    seq = obj.get("seq")
    if seq is not None and (type(seq) is not int or seq < 0):
        return None
    raw_ts = obj.get("ts")
    ts: datetime | None = None
    try:
        if isinstance(raw_ts, str) and PLAIN_ISO.fullmatch(raw_ts):
            ts = datetime.fromisoformat(raw_ts)
        elif isinstance(raw_ts, int | float) and type(raw_ts) is not bool and raw_ts >= 0:
            # as shared/schemas.py `_epoch` reads it
            ts = datetime.fromtimestamp(raw_ts / 1000 if raw_ts > EPOCH_MS_ABOVE else raw_ts,
                                        UTC)
        elif raw_ts is not None:
            return None
    except (OverflowError, ValueError, OSError):
        return None
    kinds = {*map(type, values.values())}
    others: list[Value] = []
    if values.keys() <= valid_names and kinds <= FLOAT:
        numbers = values  # the usual reading: known names, every value a float
    else:
        numbers = {}
        for name, raw in values.items():
            if name not in valid_names and not name_ok(name):
                return None
            kind = type(raw)
            if kind is float or kind is int:
                numbers[name] = float(raw)
            elif kind is bool:
                numbers[name] = 1.0 if raw else 0.0
            elif (kind is list or raw is None) and dict not in kinds:
                # No kind of value: the full parse's reject, without its 40 µs of pydantic
                # errors (a malformed message must not cost more than a valid one). Its
                # first error is this value's: those before it are valid, and only an
                # object after it could hold a `ts` error, which it would report instead.
                where = name if obj.get("telemetry") is None else f"telemetry.{name}"
                raise ValidationFailed("schema_violation", f"{where}: {NOT_A_VALUE}",
                                       field=where)
            elif (value := plain_value(name, raw)) is None:
                return None
            elif value.number is not None and value.unit is None and value.quality is None:
                numbers[name] = value.number  # {"value": 1.5}
            else:
                others.append(value)
    return Reading(bounded_timestamp(ts, received, limits), seq, numbers, others)
