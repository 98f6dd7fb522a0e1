"""What the ingestor added to the Redis stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from shared.streams import TELEMETRY
from tests.utils.waiting import wait_until

# A stream entry as the tests' clients receive it (RESP2, no decode_responses): its id and
# fields, all bytes. redis-py types each reply for every protocol and decoding setting at
# once (and XRANGE's as possibly None), so these helpers name the shape the tests rely on.
Fields = dict[bytes, bytes]
Entry = tuple[bytes, Fields]


def range_entries(reply: list[Any] | None) -> list[Entry]:
    """XRANGE's reply: the entries, oldest first."""
    return cast(list[Entry], reply)


def read_entries(reply: list[Any] | dict[Any, Any]) -> list[tuple[bytes, list[Entry]]]:
    """XREAD's or XREADGROUP's reply (RESP2, a list): (stream, entries) per stream."""
    return cast(list[tuple[bytes, list[Entry]]], reply)


def xadd_fields(fields: Mapping[str, bytes]) -> dict[FieldT, EncodableT]:
    """An encoded entry as XADD's fields: redis-py types them as a dict of its own key and
    value unions, and a dict[str, bytes] is not one (dict is invariant)."""
    return dict(fields.items())


def stream_seqs(redis_url: str) -> set[int]:
    found = range_entries(redis.Redis.from_url(redis_url).xrange(TELEMETRY))
    return {int(fields[b"seq"]) for _, fields in found}


async def all_streamed(redis_url: str, count: int) -> None:
    """Wait until the stream holds seqs 0..count-1: the ingestor adds a batch's entries
    just after committing its rows, so the rows alone do not say the entries are there."""
    async def seqs() -> set[int]:
        return stream_seqs(redis_url)

    await wait_until(seqs, lambda found: found == set(range(count)),
                     what=f"all {count} readings on the stream")
