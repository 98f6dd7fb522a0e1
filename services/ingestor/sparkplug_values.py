"""A Sparkplug metric as the platform's value: its name (`insa_metric` or the Sparkplug
name made a platform name), unit and quality from its properties, its timestamp within the
ingestor's window, and what its birth declared (`Known`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.readings import Limits
from shared.sparkplug import SparkplugError
from shared.sparkplug.payload import DataType, Metric, PropertyValue

NUMERIC = frozenset({DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64,
                     DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64,
                     DataType.Float, DataType.Double, DataType.Boolean, DataType.DateTime})
TEXT = frozenset({DataType.String, DataType.Text, DataType.UUID})
UNIT_PROPERTIES = ("engUnit", "engUnits", "unit")
QUALITY_PROPERTIES = ("Quality", "quality")
MAX_QUALITY = 32767
NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def metric_name(metric: Metric, birth_name: str | None) -> str | None:
    """The platform's metric name: the `insa_metric` property when the edge node gives one
    (e.g. `motor_current`, so diagnosis knows it), else the Sparkplug name with `/` as `.`
    and other characters a name cannot hold as `_`; None when nothing is left."""
    override = metric.properties.get("insa_metric")
    if isinstance(override, str) and override:
        return override
    name = metric.name or birth_name
    if not name:
        return None
    cleaned = NOT_A_NAME.sub("_", name.strip().replace("/", ".")).lstrip("_.:-")[:128]
    return cleaned or None


@dataclass(slots=True)
class Known:
    """A metric as its birth declared it, and its platform name."""

    name: str
    datatype: DataType
    unit: str | None
    platform: str | None


def unit_of(metric: Metric) -> str | None:
    unit = _property(metric, UNIT_PROPERTIES,
                     lambda v: isinstance(v, str) and bool(v))
    return unit[:32] if isinstance(unit, str) else None


def quality_of(metric: Metric) -> int | None:
    quality = _property(metric, QUALITY_PROPERTIES, lambda v: isinstance(v, int) and not
                        isinstance(v, bool) and 0 <= v <= MAX_QUALITY)
    return quality if isinstance(quality, int) else None


def _property(metric: Metric, keys: tuple[str, ...], usable: Callable[[PropertyValue], bool]
              ) -> PropertyValue:
    """The first of `keys` the metric's properties hold a usable value for, else None."""
    for key in keys if metric.properties else ():
        value = metric.properties.get(key)
        if usable(value):
            return value
    return None


def timestamp(ms: int | None, received: datetime, limits: Limits) -> datetime:
    """A Sparkplug timestamp (ms since the epoch) within the ingestor's bounds; the receive
    time when there is none, and a SparkplugError when it is out of them."""
    if ms is None:
        return received
    try:
        ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        raise SparkplugError(f"timestamp {ms} is out of range") from None
    if ts - received > limits.max_future_skew or received - ts > limits.max_past_age:
        raise SparkplugError(f"timestamp {ts.isoformat()} is outside the accepted window")
    return ts
