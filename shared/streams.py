"""Redis Streams between services (docs/architecture.md, "Redis streams"): the
`insa:telemetry` entry format,
a batch writer, trimming of what every group has consumed, and the consumer-group
reader that every stream consumer runs on.

Consumers get at-least-once delivery: an entry is acknowledged (XACK) only after
the consumer's handler returned, i.e. after its own writes committed; entries a
dead consumer left pending are claimed by another after `claim_idle_ms`; an entry
that fails `max_deliveries` times goes to `insa:dead` with its error and is
acknowledged, so one bad entry never blocks a group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar

import orjson
import redis.asyncio as redis
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from shared.redis_client import is_transient as redis_transient
from shared.retry import Stopped, retry_until_available

log = structlog.get_logger(__name__)

TELEMETRY = "insa:telemetry"
DIAGNOSTICS = "insa:diagnostics"
ALERTS = "insa:alerts"
DEAD = "insa:dead"


# --- insa:telemetry entries ---------------------------------------------------------------
# device_id, ts (epoch ms), metrics (JSON object), seq ("" when the reading had none): the
# writer's wire form, already bytes, so a batch goes to Redis without another pass.
EncodedEntry = tuple[bytes, bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class TelemetryEntry:
    device_id: str
    ts_ms: int
    metrics: dict[str, float | str]
    seq: int | None


def encode_telemetry(device_id: str, ts_ms: int, metrics: dict[str, float | str],
                     seq: int | None) -> EncodedEntry:
    return (device_id.encode(), str(ts_ms).encode(), orjson.dumps(metrics),
            b"" if seq is None else str(seq).encode())


def decode_telemetry(fields: dict[bytes, bytes]) -> TelemetryEntry:
    """Raises ValueError (or KeyError) for an entry that is not in the contract's form."""
    metrics = orjson.loads(fields[b"metrics"])
    if not isinstance(metrics, dict):
        raise ValueError("metrics is not a JSON object")
    seq = fields.get(b"seq", b"")
    return TelemetryEntry(fields[b"device_id"].decode(), int(fields[b"ts"]), metrics,
                          int(seq) if seq else None)


# --- insa:diagnostics entries -------------------------------------------------------------
def encode_diagnosis(device_id: str, ts_ms: int, diagnosis: dict[str, Any]) -> dict[str, bytes]:
    """device_id, ts (epoch ms of the reading that caused it), diagnosis (the event's JSON,
    with its `id` in `diagnoses`: consumers see at-least-once and drop a repeated id)."""
    return {"device_id": device_id.encode(), "ts": str(ts_ms).encode(),
            "diagnosis": orjson.dumps(diagnosis)}


def decode_diagnosis(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """Raises ValueError (or KeyError) for an entry that is not in the contract's form."""
    diagnosis = orjson.loads(fields[b"diagnosis"])
    if not isinstance(diagnosis, dict):
        raise ValueError("diagnosis is not a JSON object")
    return diagnosis


# One EVALSHA adds a whole batch: far cheaper for the ingestor than one pipelined XADD
# per reading (redis-py spends more packing commands than Redis spends running them).
# The batch is one argument, each entry's four fields ended by a newline: redis-py's
# packing runs Python code per argument (a tenth of the ingestor's CPU with four per
# entry). No field can hold a newline: device ids, ts and seq cannot, and the metrics
# JSON escapes control characters in its strings.
XADD_MANY = """
local f, n = {}, 0
for field in string.gmatch(ARGV[1], '([^\\n]*)\\n') do
  f[#f + 1] = field
  if #f == 4 then
    redis.call('XADD', KEYS[1], '*', 'device_id', f[1], 'ts', f[2], 'metrics', f[3],
               'seq', f[4])
    f, n = {}, n + 1
  end
end
return n
"""
# Each script run a few milliseconds of Redis time: at most this many entries, and an
# argument of at most this many bytes (Redis refuses one over 512 MB).
ENTRIES_PER_CALL = 2000
BYTES_PER_CALL = 16 << 20


class TelemetryWriter:
    def __init__(self, client: redis.Redis, key: str = TELEMETRY) -> None:
        self.key = key
        self._xadd_many = client.register_script(XADD_MANY)

    async def add(self, entries: list[EncodedEntry]) -> None:
        for start in range(0, len(entries), ENTRIES_PER_CALL):
            await self._add(entries[start:start + ENTRIES_PER_CALL])

    async def _add(self, entries: list[EncodedEntry]) -> None:
        batch = b"\n".join(chain.from_iterable(entries)) + b"\n"
        if len(batch) > BYTES_PER_CALL and len(entries) > 1:
            half = len(entries) // 2
            await self._add(entries[:half])
            await self._add(entries[half:])
            return
        added = await self._xadd_many(keys=[self.key], args=[batch])
        if added != len(entries):  # a field with a newline: the encoders cannot make one
            log.error("stream entries not added", key=self.key, sent=len(entries),
                      added=added)


# --- trimming ---------------------------------------------------------------------------
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
                # None when the consumers acked everything since XINFO GROUPS: then
                # nothing is pending below the last-delivered id.
                if summary["min"] is not None:
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


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


# --- consumer groups --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamMessage:
    id: str
    fields: dict[bytes, bytes]


# The handler commits the consumer's own writes for the whole list, then returns; it
# raises for a transient failure (the batch is retried as is) or for a bad entry (the
# batch is retried one entry at a time, and an entry that keeps failing is dead-lettered).
Handler = Callable[[list[StreamMessage]], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSettings:
    batch: int = 100
    block_ms: int = 1000
    claim_idle_ms: int = 60_000   # a pending entry this idle belongs to a dead consumer
    claim_every_seconds: float = 5.0
    max_deliveries: int = 5       # then the entry goes to insa:dead
    retry_pending_seconds: float = 2.0  # how soon a failed entry is tried again
    dead_stream: str = DEAD


@dataclass
class ConsumerStats:
    handled: int = 0
    dead_lettered: int = 0
    retried: int = 0  # entries that failed and were left pending to be tried again
    claimed: int = 0
    failures: int = 0


class StreamMetrics:
    """Prometheus counters of every stream consumer in the process (`insa_stream_*`),
    labelled by stream and group. The services' consumers share `default()`'s."""

    _default: ClassVar[StreamMetrics | None] = None

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ("stream", "group")
        self.dead_letters = Counter(
            "insa_stream_dead_letters_total",
            "Entries that failed max_deliveries times, added to insa:dead and acknowledged",
            labels, registry=registry)
        self.retries = Counter(
            "insa_stream_retries_total",
            "Entries that failed (not transiently) and were left pending to be tried again",
            labels, registry=registry)

    @classmethod
    def default(cls) -> StreamMetrics:
        """The one instance on the default registry (the one /metrics serves)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default


class StreamConsumer:
    """One consumer of a group: reads in batches, acks after the handler, reclaims and
    dead-letters. Replicas run the same group with distinct consumer names."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str,
                 settings: ConsumerSettings | None = None, *,
                 transient: Callable[[BaseException], bool] = redis_transient,
                 start_id: str = "0", metrics: StreamMetrics | None = None) -> None:
        self.client = client
        self.stream, self.group, self.consumer = stream, group, consumer
        self.settings = settings or ConsumerSettings()
        # The handler's own dependencies' transient errors too (e.g. PostgreSQL down).
        self.transient = lambda exc: redis_transient(exc) or transient(exc)
        self.start_id = start_id  # where a new group starts: "0" everything, "$" new only
        self.stats = ConsumerStats()
        metrics = metrics or StreamMetrics.default()
        self._dead_letters = metrics.dead_letters.labels(stream, group)
        self._retries = metrics.retries.labels(stream, group)
        self._retry_pending_at = 0.0  # our own pending entries are re-read from this time
        self._claim_at = 0.0

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, self.group, id=self.start_id,
                                            mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, handler: Handler, stop: asyncio.Event) -> None:
        """Consume until `stop`; a batch in hand is finished (handled and acked) first."""
        try:
            await self._retry(self.ensure_group, stop)
            while not stop.is_set():
                await self._retry(lambda: self.step(handler), stop)
        except Stopped:
            return

    async def step(self, handler: Handler) -> int:
        """One round: reclaim from dead consumers when due, retry our own failed entries
        when due, then read new entries (blocking up to `block_ms`). Returns entries
        handled."""
        now = time.monotonic()
        handled = 0
        if now >= self._claim_at:
            self._claim_at = now + self.settings.claim_every_seconds
            handled += await self._handle(handler, await self._claim())
        if now >= self._retry_pending_at:
            # Entries delivered to this consumer name and never acked: a batch that
            # failed, or the previous life of this consumer before a crash.
            self._retry_pending_at = float("inf")
            handled += await self._handle(handler, await self._read("0", block=None))
        handled += await self._handle(handler, await self._read(">", self.settings.block_ms))
        return handled

    async def _read(self, from_id: str, block: int | None) -> list[StreamMessage]:
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: from_id}, count=self.settings.batch,
            block=block)
        if not reply:
            return []
        _, entries = reply[0]
        # A pending entry trimmed away comes back with no fields: nothing left to handle.
        return [StreamMessage(_text(i), f) for i, f in entries if f]

    async def _claim(self) -> list[StreamMessage]:
        reply: Any = await self.client.xautoclaim(self.stream, self.group, self.consumer,
                                             min_idle_time=self.settings.claim_idle_ms,
                                             start_id="0-0", count=self.settings.batch)
        messages = [StreamMessage(_text(i), f) for i, f in reply[1] if f]
        if messages:
            self.stats.claimed += len(messages)
            log.info("claimed entries of an idle consumer", stream=self.stream,
                     group=self.group, count=len(messages))
        return messages

    async def _handle(self, handler: Handler, messages: list[StreamMessage]) -> int:
        if not messages:
            return 0
        try:
            await handler(messages)
        except Exception as exc:
            if self.transient(exc):
                raise  # the whole batch is retried once the dependency is back
            self.stats.failures += 1
            if len(messages) == 1:
                await self._failed(messages[0], exc)
                return 0
            log.warning("batch failed; handling its entries one by one", stream=self.stream,
                        group=self.group, error=f"{type(exc).__name__}: {exc}")
            return sum([await self._handle(handler, [m]) for m in messages])
        await self.client.xack(self.stream, self.group, *[m.id for m in messages])
        self.stats.handled += len(messages)
        return len(messages)

    async def _failed(self, message: StreamMessage, exc: Exception) -> None:
        """Left pending to be tried again, or dead-lettered after `max_deliveries`."""
        info: Any = await self.client.xpending_range(self.stream, self.group, min=message.id,
                                                max=message.id, count=1)
        deliveries = int(info[0]["times_delivered"]) if info else 1
        error = f"{type(exc).__name__}: {exc}"
        if deliveries < self.settings.max_deliveries:
            self._retry_pending_at = min(self._retry_pending_at,
                                         time.monotonic() + self.settings.retry_pending_seconds)
            self.stats.retried += 1
            self._retries.inc()
            log.warning("entry failed; will retry", stream=self.stream, group=self.group,
                        id=message.id, deliveries=deliveries, error=error)
            return
        await self.client.xadd(self.settings.dead_stream, {
            "stream": self.stream, "group": self.group, "id": message.id,
            "fields": orjson.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                                    for k, v in message.fields.items()}),
            "error": error[:2000], "deliveries": deliveries})
        await self.client.xack(self.stream, self.group, message.id)
        self.stats.dead_lettered += 1
        self._dead_letters.inc()
        log.error("entry dead-lettered", stream=self.stream, group=self.group, id=message.id,
                  deliveries=deliveries, error=error, dead_stream=self.settings.dead_stream)

    async def lag(self) -> tuple[int, int]:
        """(entries the group has not read yet, entries read but not acknowledged)."""
        return (await group_backlog(self.client, self.stream)).get(self.group, (0, 0))

    async def _retry(self, attempt: Callable[[], Awaitable[object]], stop: asyncio.Event
                     ) -> None:
        await retry_until_available(attempt, transient=self.transient,
                                    what=f"{self.stream}/{self.group}", stop=stop)


async def group_backlog(client: redis.Redis, stream: str) -> dict[str, tuple[int, int]]:
    """Per consumer group of `stream`: (entries not read yet, entries read but not
    acknowledged). A group whose last delivered id is the stream's newest has read
    everything, whatever XINFO's `lag` says: Redis derives that from counters that drift
    after a restart (seen: lag 129,257 on a stream of 8 entries, every one delivered)."""
    try:
        newest = _stream_id((await client.xinfo_stream(stream))["last-generated-id"])
        groups = await client.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return {}
    return {_text(g["name"]): (0 if _stream_id(g["last-delivered-id"]) >= newest
                               else int(g.get("lag") or 0), int(g["pending"]))
            for g in groups}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
