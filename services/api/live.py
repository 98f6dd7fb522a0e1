"""The live feed's fan-out hub: one reader per Redis stream serves every live client of
the process (docs/architecture.md, "API").

Each reader reads its stream with XREAD BLOCK from the last id it dispatched and offers
every entry to the subscribed clients' bounded queues, indexed by device, so an entry
costs only its own device's subscribers (plus the fleet-wide ones). A client whose queue
is full is dropped on the spot (its queue emptied down to one marker) and its feed ends
with a `resume` event naming the last position it was sent: a slow client costs a bounded
queue, never the hub's pace or another client's events.

Resuming without gap or duplicate: a client's subscription is registered before anything
is read; then each stream's hub position is taken as its switch point S. Entries after S
reach its queue from the hub; entries between its cursor and S are read with XREVRANGE
(at most `backlog_max`, the newest, with a `gap` event for what that bound skipped); queued
entries not newer than what was sent are dropped. A reader with no subscribers idles
instead of reading the fleet's telemetry for nobody; the first subscriber pins its position
to the stream's last generated id before the switch point is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as redis
import structlog

from services.api.live_entries import (
    STREAMS,
    EntryId,
    LiveEvent,
    Out,
    decode_entry,
    encode_cursor,
    format_id,
    parse_id,
)
from shared.errors import DependencyUnavailable, TooManyRequests
from shared.redis_client import UNAVAILABLE, is_transient

log = structlog.get_logger(__name__)


class TooManyFeeds(TooManyRequests):
    """The caller holds its maximum of feeds (429): one caller cannot take every slot."""

    code = "too_many_live_feeds"


class Subscription:
    """One client's bounded queue on the readers of the streams it follows. `None` in the
    queue is the marker that the client fell behind and was dropped."""

    def __init__(self, streams: frozenset[str], devices: frozenset[str] | None,
                 size: int) -> None:
        self.streams, self.devices = streams, devices
        self.queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(size)
        self.dropped = False
        self._readers: list[StreamReader] = []

    def wants(self, event: LiveEvent) -> bool:
        return self.devices is None or event.device_id in self.devices

    def offer(self, event: LiveEvent) -> bool:
        """Queue the event; False when the queue was full and the client is now dropped."""
        if self.dropped:
            return True
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return False

    def attach(self, reader: StreamReader) -> None:
        reader.add(self)
        self._readers.append(reader)

    def detach(self) -> None:
        for reader in self._readers:
            reader.remove(self)
        self._readers = []


class StreamReader:
    """The one XREAD loop of a stream in this process."""

    def __init__(self, client: redis.Redis, name: str, batch: int, block_ms: int) -> None:
        self.client, self.name, self.key = client, name, STREAMS[name][0]
        self.batch, self.block_ms = batch, block_ms
        self.position: EntryId | None = None  # last id dispatched; None while idle
        self.fleet: set[Subscription] = set()
        self.by_device: dict[str, set[Subscription]] = {}
        self.subscribers = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def add(self, sub: Subscription) -> None:
        if sub.devices is None:
            self.fleet.add(sub)
        for device in sub.devices or ():
            self.by_device.setdefault(device, set()).add(sub)
        self.subscribers += 1

    def remove(self, sub: Subscription) -> None:
        self.fleet.discard(sub)
        for device in sub.devices or ():
            subs = self.by_device.get(device)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.by_device[device]
        self.subscribers -= 1

    async def ensure_position(self) -> None:
        """Pin an idle reader to the stream's last generated id (where `$` would start)."""
        if self.position is not None:
            return
        async with self._lock:
            if self.position is None:
                try:
                    info: Any = await self.client.xinfo_stream(self.key)
                    last = info["last-generated-id"]
                    self.position = parse_id(last.decode() if isinstance(last, bytes)
                                              else last)
                except redis.ResponseError:  # no such stream yet: everything is new
                    self.position = (0, 0)
                self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            if not self.subscribers:
                self.position = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                self._wake.clear()
                continue
            try:
                await self.ensure_position()
                assert self.position is not None
                reply: Any = await self.client.xread({self.key: format_id(self.position)},
                                                     count=self.batch, block=self.block_ms)
                delay = 0.5
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("live reader failed; retrying", stream=self.key)
                else:
                    log.warning("live reader: redis unavailable", stream=self.key,
                                error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 10.0)
                continue
            for _, entries in reply or ():
                self.dispatch(entries)

    def dispatch(self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Offer each entry to its subscribers; synchronous, so a subscriber registered
        between two awaits sees every entry after the position it read."""
        dropped: list[Subscription] = []
        for raw_id, fields in entries:
            entry_id = parse_id(raw_id.decode())
            self.position = entry_id
            device = fields.get(b"device_id")
            if device is not None and not self.fleet and \
                    device.decode(errors="replace") not in self.by_device:
                continue  # nobody follows this device: not even decoded
            try:
                event = decode_entry(self.name, entry_id, fields)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("live feed skips a malformed entry", stream=self.key,
                            id=format_id(entry_id), error=f"{type(exc).__name__}: {exc}")
                continue
            for sub in self.fleet:
                if not sub.offer(event):
                    dropped.append(sub)
            for sub in self.by_device.get(event.device_id or "", ()):
                if not sub.offer(event):
                    dropped.append(sub)
        for sub in dropped:
            sub.detach()


class LiveHub:
    def __init__(self, client: redis.Redis, *, queue_size: int = 256,
                 max_clients: int = 2000, backlog_max: int = 5000,
                 heartbeat_seconds: float = 15.0, block_ms: int = 1000,
                 batch: int = 500) -> None:
        self.client = client
        self.queue_size, self.max_clients = queue_size, max_clients
        self.backlog_max, self.heartbeat_seconds = backlog_max, heartbeat_seconds
        self.readers = {name: StreamReader(client, name, batch, block_ms) for name in STREAMS}
        self.clients = 0
        self.by_owner: Counter[str] = Counter()  # feeds held per caller

    @property
    def full(self) -> bool:
        return self.clients >= self.max_clients

    def admit(self, owner: str | None = None, per_owner: int = 0) -> None:
        """Raises unless the process, and `owner` (a caller allowed `per_owner` feeds),
        each have room for one more feed."""
        if self.full:
            raise DependencyUnavailable(f"the live feed is at its {self.max_clients} clients")
        if owner is not None and self.by_owner[owner] >= per_owner:
            raise TooManyFeeds(f"this caller already holds {per_owner} live feeds, the most "
                               "one caller may (INSA_API_LIVE_MAX_PER_PRINCIPAL); close one "
                               "first", retry_after=5)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for reader in self.readers.values():
                group.create_task(reader.run(stop), name=f"live-{reader.name}")

    @asynccontextmanager
    async def follow(self, streams: Iterable[str], devices: frozenset[str] | None,
                     since: dict[str, EntryId], owner: str | None = None,
                     per_owner: int = 0) -> AsyncIterator[Feed]:
        """A client's feed from `since` (per stream; live from now where absent), counted
        against `owner`'s `per_owner` feeds when given."""
        self.admit(owner, per_owner)
        self.clients += 1
        if owner is not None:
            self.by_owner[owner] += 1
        sub = Subscription(frozenset(streams), devices, self.queue_size)
        try:
            for name in sub.streams:
                sub.attach(self.readers[name])
            try:
                for name in sub.streams:
                    await self.readers[name].ensure_position()
            except UNAVAILABLE as exc:
                raise DependencyUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
            switch: dict[str, EntryId] = {}
            for name in sub.streams:  # no await from here: the switch points are exact
                position = self.readers[name].position
                assert position is not None  # a reader with subscribers never idles
                switch[name] = position
            yield Feed(self, sub, switch, since)
        finally:
            sub.detach()
            self.clients -= 1
            if owner is not None:
                self.by_owner[owner] -= 1
                if not self.by_owner[owner]:
                    del self.by_owner[owner]

    async def backlog(self, sub: Subscription, after: dict[str, EntryId],
                      upto: dict[str, EntryId]
                      ) -> tuple[list[tuple[str, EntryId]], list[LiveEvent]]:
        """The client's events in (after, upto] of each stream, merged in id order, and
        (stream, last skipped id) where more than `backlog_max` entries were missed."""
        gaps: list[tuple[str, EntryId]] = []
        found: list[list[LiveEvent]] = []
        for name in sorted(sub.streams):
            if after[name] >= upto[name]:
                continue
            rows: Any = await self.client.xrevrange(
                STREAMS[name][0], max=format_id(upto[name]),
                min="(" + format_id(after[name]), count=self.backlog_max + 1)
            if len(rows) > self.backlog_max:
                gaps.append((name, parse_id(rows[-1][0].decode())))
                rows = rows[:self.backlog_max]
            events = []
            for raw_id, fields in reversed(rows):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    event = decode_entry(name, parse_id(raw_id.decode()), fields)
                    if sub.wants(event):
                        events.append(event)
            found.append(events)
        return gaps, list(heapq.merge(*found, key=lambda e: e.id))


class Feed:
    """One client's events: `ready`, the backlog, then live ones, each with the cursor
    that resumes right after it."""

    def __init__(self, hub: LiveHub, sub: Subscription, switch: dict[str, EntryId],
                 since: dict[str, EntryId]) -> None:
        self.hub, self.sub, self.switch = hub, sub, switch
        self.positions = {name: since.get(name, switch[name]) for name in sub.streams}

    @property
    def cursor(self) -> str:
        return encode_cursor(self.positions)

    async def events(self) -> AsyncGenerator[Out, None]:
        yield "ready", self.cursor, orjson.dumps({
            "cursor": self.cursor, "streams": sorted(self.sub.streams),
            "devices": sorted(self.sub.devices) if self.sub.devices is not None else None})
        try:
            gaps, backlog = await self.hub.backlog(self.sub, self.positions, self.switch)
        except UNAVAILABLE as exc:
            yield self._resume(f"redis unavailable: {type(exc).__name__}")
            return
        for name, skipped_to in gaps:
            after, self.positions[name] = self.positions[name], skipped_to
            yield "gap", self.cursor, orjson.dumps({
                "stream": name, "after": format_id(after), "through": format_id(skipped_to),
                "reason": f"more than {self.hub.backlog_max} entries missed"})
        for event in backlog:
            yield self._emit(event, live=False)
        queue = self.sub.queue
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(queue.get(), self.hub.heartbeat_seconds)
                except TimeoutError:
                    self._catch_up()
                    yield "heartbeat", self.cursor, b"{}"
                    continue
            if item is None:
                yield self._resume("slow consumer: the queue of "
                                   f"{self.hub.queue_size} events overflowed")
                return
            if item.id > self.positions[item.stream]:  # else sent in the backlog already
                yield self._emit(item, live=True)

    def _emit(self, event: LiveEvent, live: bool) -> Out:
        self.positions[event.stream] = event.id
        if live:
            self._catch_up()
        return STREAMS[event.stream][2], self.cursor, event.data

    def _catch_up(self) -> None:
        """With the queue empty, every entry up to the hub's positions that this client
        wants has been sent: its cursor may move there, so a resume after a quiet while
        does not rescan what was filtered out."""
        if not self.sub.queue.empty() or self.sub.dropped:
            return
        for name in self.sub.streams:
            position = self.hub.readers[name].position
            if position is not None and position > self.positions[name]:
                self.positions[name] = position

    def _resume(self, reason: str) -> Out:
        return "resume", self.cursor, orjson.dumps({"reason": reason, "cursor": self.cursor})

