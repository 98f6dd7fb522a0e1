"""Append readings to the `insa:telemetry` stream, many entries per round trip."""

from __future__ import annotations

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
