"""The one way the platform writes a time (docs/payloads.md, "Times the platform
writes"): RFC 3339 in UTC with `Z`, to the microsecond when the time has a fraction and
without one when it has none: the form orjson gives the API's JSON answers, so alert and
diagnosis events, the live feed, commands, exports and replays all read alike."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(at: datetime | float) -> str:
    """`at`, an aware datetime or epoch seconds, as `2026-11-22T10:32:00.250000Z`."""
    moment = datetime.fromtimestamp(at, UTC) if isinstance(at, int | float) \
        else at.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")
