"""What a parsed message is (`Reading`s of numbers and `Value`s, a `StatusChange`), the
bounds it is checked against (`Limits`), and the checks both parses of shared/schemas.py
and their callers share: names against the contract's pattern (`check_name`, cached), a
timestamp within `Limits` around the ingestor's clock (`bounded_timestamp`), and units
(`check_units`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from shared.errors import ValidationFailed
from shared.mqtt import NAME_PATTERN, NAME_RE
from shared.units import UnitError, conversion

# Keys of a reading that are not metrics when the reading is flat.
RESERVED_KEYS = frozenset({"ts", "timestamp", "seq", "device_id", "telemetry", "metadata"})
EPOCH_MS_ABOVE = 2e10  # an epoch number above this is milliseconds (2e10 s is in 2603)
NOT_A_VALUE = "must be a number, bool, string or {value, unit, quality} object"


# msgspec Structs, not dataclasses: the ingestor builds these per message, and a Struct is
# built in C (about a quarter of a slotted dataclass's cost); a Value holds no containers,
# so the collector never tracks it.
class Value(msgspec.Struct, gc=False):
    """A value that is not a plain number: text, or one with its unit or quality."""

    metric: str
    number: float | None  # numbers and bools (true = 1.0)
    text: str | None      # strings go to telemetry_text
    quality: int | None
    unit: str | None


class Reading(msgspec.Struct):
    """One timestamp's values: the plain numbers (no unit, no quality; bools as 1.0 and
    0.0) by metric, which is what devices mostly send and costs no object per value, and
    every other value in `values`, in the order sent."""

    ts: datetime
    seq: int | None
    numbers: dict[str, float]
    values: list[Value]
    # Stored, but neither the latest value nor streamed to diagnosis and alerts (a Sparkplug
    # metric flagged is_historical: a backfill, not news).
    historical: bool = False

    def count(self) -> int:
        return len(self.numbers) + len(self.values)

    def metrics(self) -> list[str]:
        return [*self.numbers, *(v.metric for v in self.values)]

    def numbers_in_units(self) -> list[tuple[str, float, str | None]]:
        """Every number with the unit it came in (None: none given): (metric, number, unit)."""
        return [*((name, number, None) for name, number in self.numbers.items()),
                *((v.metric, v.number, v.unit) for v in self.values if v.number is not None)]


def reading_of(ts: datetime, seq: int | None, values: list[Value], historical: bool = False
               ) -> Reading:
    """A Reading of `values`, its plain numbers taken out into `numbers`."""
    numbers: dict[str, float] = {}
    others: list[Value] = []
    for v in values:
        if v.number is not None and v.unit is None and v.quality is None \
                and v.metric not in numbers:
            numbers[v.metric] = v.number
        else:
            others.append(v)
    return Reading(ts, seq, numbers, others, historical)


def check_units(readings: list[Reading]) -> list[Reading]:
    """A number of a known metric in a unit that cannot express it rejects the whole message
    (`bad_unit`), so the ingestor's mapping converts only units that convert. Only `values`
    can carry a unit; the conversion found is cached (`shared.units.conversion`)."""
    for reading in readings:
        for v in reading.values:
            if v.unit is not None and v.number is not None:
                try:
                    conversion(v.metric, v.unit)
                except UnitError as exc:
                    raise ValidationFailed("bad_unit", str(exc),
                                           field=f"telemetry.{v.metric}.unit") from None
    return readings


@dataclass(slots=True)
class StatusChange:
    online: bool
    ts: datetime


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds the parser enforces; the ingestor builds these from its settings."""

    max_future_skew: timedelta = timedelta(minutes=5)
    # Older is a clock fault (1970, year 1), not a store-and-forward backlog.
    max_past_age: timedelta = timedelta(days=3650)
    max_values_per_reading: int = 1000
    max_readings_per_message: int = 10000


valid_names: set[str] = set()  # names seen valid; devices repeat the same few names
VALID_NAMES_MAX = 100_000


def name_ok(name: str) -> bool:
    if name in valid_names:
        return True
    if NAME_RE.fullmatch(name):
        if len(valid_names) < VALID_NAMES_MAX:
            valid_names.add(name)
        return True
    return False


def check_name(kind: str, name: str, field: str | None = None) -> None:
    if name_ok(name):
        return
    raise ValidationFailed(f"bad_{kind}_name", f"{kind} name {name[:64]!r} does not match "
                                               f"{NAME_PATTERN}", field=field)


def bounded_timestamp(ts: datetime | None, received: datetime, limits: Limits) -> datetime:
    """`ts` in UTC if within `limits` around `received`; `received` when there is none."""
    if ts is None:
        return received
    try:
        # Bounds first: subtracting aware datetimes cannot overflow, but converting year 1
        # at +14:00 to UTC does.
        ahead = ts - received
        if ahead > limits.max_future_skew:
            raise ValidationFailed("timestamp_in_future",
                                   f"timestamp {ts.isoformat()} is more than "
                                   f"{limits.max_future_skew} ahead of the ingestor's clock",
                                   field="ts")
        if -ahead > limits.max_past_age:
            raise ValidationFailed("timestamp_too_old",
                                   f"timestamp {ts.isoformat()} is more than "
                                   f"{limits.max_past_age / timedelta(days=1):.10g} days behind "
                                   "the ingestor's clock (the past bound)", field="ts")
        return ts.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValidationFailed("invalid_timestamp", f"timestamp {ts.isoformat()} is out of "
                                                    f"range: {exc}", field="ts") from None
