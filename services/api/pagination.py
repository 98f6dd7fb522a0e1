"""Cursor pagination: an opaque cursor (url-safe base64 of the last item's sort key) and
pages of `{items, next_cursor}`; stable under inserts, unlike offsets."""

from __future__ import annotations

import base64
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

from shared.errors import ValidationFailed

T = TypeVar("T")
NOT_OURS = "cursor: not a cursor this endpoint returned"


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def after_id(cursor: str | None) -> int | None:
    """The id a page ordered by id continues after (None: the first page)."""
    key = decode_cursor(cursor, 1)
    if key is not None and type(key[0]) is not int:
        raise ValidationFailed("bad_cursor", NOT_OURS, field="cursor")
    return None if key is None else key[0]


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != arity:
        raise ValidationFailed("bad_cursor", NOT_OURS, field="cursor")
    return key
