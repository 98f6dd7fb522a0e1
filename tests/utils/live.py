"""Talking to the live feed in tests: entries added to the Redis streams, and a small
server-sent events reader (event, id, data lines)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import redis.asyncio as redis

from shared.streams import (
    ALERTS,
    DIAGNOSTICS,
    TELEMETRY,
    encode_diagnosis,
    encode_telemetry,
)

TS_MS = 1795_000_000_123  # 2026-11-18T11:06:40.123Z
ACCEPT = {"Accept": "text/event-stream"}
_alert_ids = itertools.count(1)


async def xadd(conn: redis.Redis, key: str, fields: dict[Any, Any]) -> str:
    entry: Any = await conn.xadd(key, fields)
    return str(entry.decode())


async def add_telemetry(conn: redis.Redis, device: str, metrics: dict[str, Any],
                        seq: int | None = None) -> str:
    fields = dict(zip((b"device_id", b"ts", b"metrics", b"seq"),
                      encode_telemetry(device, TS_MS, metrics, seq), strict=True))
    return await xadd(conn, TELEMETRY, fields)


async def add_alert(conn: redis.Redis, device: str) -> tuple[str, dict[str, Any]]:
    alert = {"id": next(_alert_ids), "alert_id": 17, "rule_id": 3, "rule": "motor hot",
             "device_id": device, "event": "firing", "state": "firing",
             "severity": "critical", "value": 104.2, "at": "2026-11-22T10:32:00Z"}
    return await xadd(conn, ALERTS, {"alert": orjson.dumps(alert)}), alert


async def add_diagnosis(conn: redis.Redis, device: str) -> tuple[str, dict[str, Any]]:
    diagnosis = {"id": 5, "device_id": device, "ts": "2026-11-22T10:31:00Z",
                 "code": "gas_lock", "severity": "critical", "cleared": False,
                 "confidence": 0.86, "evidence": {}, "action": "raise the pump speed"}
    return await xadd(conn, DIAGNOSTICS, encode_diagnosis(device, TS_MS, diagnosis)), diagnosis


# --- an SSE client -------------------------------------------------------------------------
@dataclass
class Event:
    event: str
    id: str | None
    data: Any


class EventStream:
    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> Event:
        return await asyncio.wait_for(self._read(), timeout)

    async def take(self, n: int) -> list[Event]:
        return [await self.next() for _ in range(n)]

    async def _read(self) -> Event:
        name, event_id, data = "message", None, list[str]()
        async for line in self._lines:
            if not line:
                if data:
                    return Event(name, event_id, orjson.loads("\n".join(data)))
                continue
            if line.startswith(":"):
                continue  # a ping comment
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
        raise EOFError("the stream ended")


@contextlib.asynccontextmanager
async def sse(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
              **params: str) -> AsyncIterator[EventStream]:
    async with client.stream("GET", "/live/events", params=params,
                             headers={**ACCEPT, **(headers or {})}) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        stream = EventStream(response)
        ready = await stream.next()
        assert ready.event == "ready" and ready.id == ready.data["cursor"]
        yield stream


def position(cursor: str | None, letter: str) -> str:
    found = re.search(rf"(?:^|;){letter}=(\d+-\d+)", cursor or "")
    assert found, cursor
    return found[1]


def own(event: str, cursor: str | None) -> str:
    """The position, in an event's cursor, of the event's own stream (the others move
    with what the hub has read by then)."""
    return position(cursor, {"telemetry": "t", "alert": "a", "diagnosis": "d"}[event])


def kinds(events: list[Event]) -> dict[str, Event]:
    """By event name, each at most once."""
    found = {e.event: e for e in events}
    assert len(found) == len(events), [(e.event, e.id) for e in events]
    return found


