"""What the ingestor added to the Redis stream."""

from __future__ import annotations

import redis

from shared.streams import TELEMETRY


def stream_seqs(redis_url: str) -> set[int]:
    entries = redis.Redis.from_url(redis_url).xrange(TELEMETRY)
    return {int(fields[b"seq"]) for _, fields in entries}
