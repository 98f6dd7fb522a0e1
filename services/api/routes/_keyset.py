"""Keyset cursors over (time, id), newest first: the timelines of diagnoses and alerts.
A cursor is the last item's key, so a page is stable while new rows arrive."""

from __future__ import annotations

from datetime import datetime

from services.api.pagination import NOT_OURS, decode_cursor, encode_cursor
from shared.errors import ValidationFailed


def after(cursor: str | None) -> tuple[datetime | None, int | None]:
    """The (time, id) a page continues after, or (None, None) for the first page."""
    key = decode_cursor(cursor, 2)
    if key is None:
        return None, None
    at, row_id = key
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or type(row_id) is not int:
        raise ValidationFailed("bad_cursor", NOT_OURS, field="cursor")
    return when, row_id


def cursor_of(at: datetime, row_id: int) -> str:
    return encode_cursor(at.isoformat(), row_id)


def check_window(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise ValidationFailed("bad_range", "end: must be after start", field="end")
