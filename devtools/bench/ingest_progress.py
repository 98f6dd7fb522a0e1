"""How far an `insa bench ingest` phase has come: the rows the ingestors committed (their
/metrics) and, read without loading them, the readings streamed (Redis)."""

from __future__ import annotations

from typing import Any

import redis

from devtools.bench.publishers import METRICS
from devtools.stack.service_process import ServiceProcess
from shared.streams import TELEMETRY


def rows_written(ingestors: list[ServiceProcess], malformed: bool = False) -> float:
    """Rows committed so far; for a malformed fleet, the rows its rejects stand for (one
    a metric value, so the target is the same)."""
    if malformed:
        return len(METRICS) * sum(i.metric("insa_ingestor_rejects_total") for i in ingestors)
    return sum(i.metric("insa_ingestor_rows_written_total") for i in ingestors)


class StreamProgress:
    """How far a phase has come, read from Redis: the stream's count of entries ever added
    (one per reading) and its newest entry's time, which is when the last reading was
    streamed, right after its commit. Polling the ingestors' /metrics 20 times a second
    instead took about 5 % of an ingestor's CPU (py-spy), a load no production scrape
    puts on it."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.before = self.added = self._info()["entries-added"]

    def _info(self) -> dict[str, Any]:
        try:
            return self.client.xinfo_stream(TELEMETRY)  # type: ignore[no-any-return]
        except redis.ResponseError:  # no stream yet
            return {"entries-added": 0, "last-generated-id": b"0-0"}

    def advanced(self) -> bool:
        """Whether entries were added since the last call."""
        added = self._info()["entries-added"]
        moved, self.added = added > self.added, added
        return moved

    def since(self) -> int:
        return self.added - self.before

    def last_entry_at(self) -> float:
        """Wall-clock time of the newest entry (its id's milliseconds)."""
        return int(self._info()["last-generated-id"].split(b"-")[0]) / 1000
