"""What a parsed message is (`Reading`s of `Value`s, a `StatusChange`), the bounds it is
checked against (`Limits`), and the two checks both parses of shared/schemas.py share:
names against the contract's pattern (`check_name`, cached) and a timestamp within
`Limits` around the ingestor's clock (`bounded_timestamp`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import ValidationFailed
from shared.mqtt import NAME_PATTERN, NAME_RE

# Keys of a reading that are not metrics when the reading is flat.
RESERVED_KEYS = frozenset({"ts", "timestamp", "seq", "device_id", "telemetry", "metadata"})
EPOCH_MS_ABOVE = 2e10  # an epoch number above this is milliseconds (2e10 s is in 2603)


# Parsed values are plain (not frozen) slotted dataclasses: frozen ones construct several
# times slower, and the ingestor builds one per metric value.
@dataclass(slots=True)
class Value:
    metric: str
    number: float | None  # numbers and bools (true = 1.0)
    text: str | None      # strings go to telemetry_text
    quality: int | None
    unit: str | None


@dataclass(slots=True)
class Reading:
    ts: datetime
    seq: int | None
    values: list[Value]
    # Stored, but neither the latest value nor streamed to diagnosis and alerts (a Sparkplug
    # metric flagged is_historical: a backfill, not news).
    historical: bool = False


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
