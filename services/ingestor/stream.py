"""Append readings to the `insa:telemetry` stream, many entries per round trip."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

# One EVALSHA adds a whole batch: far cheaper for the ingestor than one pipelined XADD
# per reading (redis-py spends more packing commands than Redis spends running them).
XADD_MANY = """
for i = 1, #ARGV, 4 do
  redis.call('XADD', KEYS[1], '*', 'device_id', ARGV[i], 'ts', ARGV[i + 1],
             'metrics', ARGV[i + 2], 'seq', ARGV[i + 3])
end
return #ARGV / 4
"""
ENTRIES_PER_CALL = 2000  # keeps each script run to a few milliseconds of Redis time

# device_id, ts (epoch ms), metrics (JSON object), seq ("" when the reading had none)
Entry = tuple[bytes, bytes, bytes, bytes]


class TelemetryStream:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self.key = key
        self._xadd_many = client.register_script(XADD_MANY)

    async def add(self, entries: list[Entry]) -> None:
        for start in range(0, len(entries), ENTRIES_PER_CALL):
            args = [field for entry in entries[start:start + ENTRIES_PER_CALL]
                    for field in entry]
            await self._xadd_many(keys=[self.key], args=args)


def _stream_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class Trimmed:
    entries: int = 0
    unread: int = 0  # entries some consumer group had not yet read or acknowledged


async def trim_consumed(client: redis.Redis, key: str, max_len: int) -> Trimmed:
    """Drop entries every consumer group is done with; past `max_len`, the oldest anyway.

    An entry is needed while a group has not read it (after its last-delivered id) or
    has read but not acknowledged it (pending). With no groups there is no reader to
    wait for, and `max_len` is plain retention.
    """
    result = Trimmed()
    try:
        groups = await client.xinfo_groups(key)
    except redis.ResponseError:  # no stream yet
        return result
    if groups:
        floors = []
        for group in groups:
            floor = _stream_id(group["last-delivered-id"])
            if group["pending"]:
                summary = await client.xpending(key, group["name"])
                floor = min(floor, _stream_id(summary["min"]))
            floors.append(floor)
        ms, seq = min(floors)
        # Approximate trimming removes whole nodes only: it may keep more, never less.
        result.entries = await client.xtrim(key, minid=f"{ms}-{seq}", approximate=True)
    length = await client.xlen(key)
    if length > max_len:
        dropped = await client.xtrim(key, maxlen=max_len, approximate=False)
        result.entries += dropped
        if groups:
            result.unread = dropped
    return result
