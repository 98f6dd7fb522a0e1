"""The live feed: telemetry, diagnoses and alert events from the Redis streams, as
server-sent events (`GET /live/events`) or over a WebSocket (`/live/ws`), both through the
process's one fan-out hub (services/api/live.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.requests import HTTPConnection
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse, SendTimeoutError, ServerSentEvent
from starlette.types import Receive, Scope, Send

from services.api import errors
from services.api.connections import abort
from services.api.deps import (
    Res,
    Resources,
    authenticate,
    authorize,
    client_of,
    still_valid,
    visible,
)
from services.api.live_entries import STREAMS, EntryId, Out, decode_cursor
from services.api.security.principal import Principal
from shared.errors import DependencyUnavailable, InsaError, TooManyRequests, ValidationFailed
from shared.mqtt import NAME_RE

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/live", tags=["live"])

RESUME_RETRY_MS = 2000  # how soon an EventSource reconnects after a `resume` event
TRY_AGAIN_LATER = 1013  # WebSocket close code after a `resume` message
FLEET_STREAMS = ("diagnostics", "alerts")

StreamsQuery = Annotated[str | None, Query(
    description="Comma-separated: telemetry, diagnostics, alerts. Default: all three with "
                "`devices` (or a device-scoped caller), else diagnostics,alerts.",
    examples=["telemetry,alerts"])]
DevicesQuery = Annotated[str | None, Query(
    description="Comma-separated device ids (at most `INSA_API_LIVE_MAX_DEVICES`, 100 by "
                "default); only their events are sent. Required for telemetry.",
    examples=["W-1,W-2"])]
SinceQuery = Annotated[str | None, Query(
    description="Resume after this cursor (the `id` of the last event received): "
                "`t=<entry id>;d=<entry id>;a=<entry id>`.",
    examples=["t=1732500000000-0;a=1732499990000-3"])]
TokenQuery = Annotated[str | None, Query(
    description="An access token, for clients that cannot set the Authorization header "
                "(EventSource, WebSocket). Checked when the connection opens.")]


class Stalled(Exception):
    """The client took no bytes for INSA_API_LIVE_SEND_TIMEOUT_SECONDS."""


def drop(scope: Scope, transport: str, seconds: float) -> None:
    """Cut off a client that stopped reading: one line, and its connection reset (a close
    would wait for it to read the bytes already buffered for it, which it never does)."""
    client = scope.get("client")
    log.info("live client dropped: it took no bytes", transport=transport, seconds=seconds,
             client=client[0] if client else None)
    abort(scope)


class LiveEventStream(EventSourceResponse):
    """sse-starlette's response, whose send timeout would otherwise end in an unhandled
    error (with a traceback) for every stalled client."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            drop(scope, "sse", self.send_timeout or 0)
            await asyncio.sleep(0)  # the server sees the reset before the response ends


async def within(seconds: float, sending: Coroutine[Any, Any, None]) -> None:
    """A send to the client, or Stalled once it has waited `seconds` for the socket."""
    try:
        await asyncio.wait_for(sending, seconds)
    except TimeoutError:
        raise Stalled from None


def owner_of(who: Principal) -> str:
    return f"{who.kind}:{who.id}"


@dataclass(frozen=True)
class LiveRequest:
    streams: frozenset[str]
    devices: frozenset[str] | None  # None: the whole fleet
    since: dict[str, EntryId]


async def live_reader(conn: HTTPConnection, res: Res,
                      access_token: TokenQuery = None) -> Principal:
    """`live:read`, with the usual headers or `?access_token=`."""
    scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else ""
    who = await authenticate(res, client_of(conn), token or access_token,
                             conn.headers.get("x-api-key"))
    await authorize(res, who, "live:read", conn)
    return who


live_reader.permission = "live:read"  # type: ignore[attr-defined]  # read by the RBAC test
Reader = Annotated[Principal, Depends(live_reader)]


def _listed(text: str | None) -> list[str]:
    return list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))


def live_request(res: Resources, who: Principal, streams: str | None, devices: str | None,
                 since: str | None) -> LiveRequest:
    names = _listed(streams)
    unknown = [name for name in names if name not in STREAMS]
    if unknown:
        raise ValidationFailed("validation", f"unknown stream {unknown[0][:40]!r}: expected "
                               f"{', '.join(STREAMS)}", field="streams")
    wanted = _listed(devices)
    for device in wanted:
        if not NAME_RE.fullmatch(device):
            raise ValidationFailed("validation", f"bad device id {device[:60]!r}",
                                   field="devices")
        visible(who, device)
    if len(wanted) > res.settings.live_max_devices:
        raise ValidationFailed("validation", f"at most {res.settings.live_max_devices} "
                               f"devices per live client", field="devices")
    # A device-scoped caller follows its own device; no one else's exists for it.
    chosen = frozenset(wanted) if wanted else \
        frozenset({who.device_id}) if who.device_id is not None else None
    if not names:
        names = list(STREAMS) if chosen is not None else list(FLEET_STREAMS)
    if "telemetry" in names and chosen is None:
        raise ValidationFailed("validation", "telemetry needs devices=<id>,... (the fleet's "
                               "telemetry is too much for one client)", field="devices")
    try:
        positions = decode_cursor(since or "")
    except ValueError as exc:
        raise ValidationFailed("validation", str(exc), field="since") from None
    return LiveRequest(frozenset(names), chosen, positions)


@router.get("/events", summary="Live events as server-sent events",
            response_class=EventSourceResponse,
            responses={200: {"description": "An endless text/event-stream (see below)",
                             "content": {"text/event-stream": {}}},
                       406: {"description": "Accept does not name text/event-stream"},
                       429: {"description": "The caller holds its maximum of live feeds "
                                            "(INSA_API_LIVE_MAX_PER_PRINCIPAL)"},
                       503: {"description": "The process holds its maximum of live clients"}})
async def live_events(request: Request, res: Res, who: Reader,
                      streams: StreamsQuery = None, devices: DevicesQuery = None,
                      since: SinceQuery = None,
                      last_event_id: Annotated[str | None, Header(
                          description="Sent by EventSource when it reconnects; takes "
                                      "precedence over `since`")] = None) -> Response:
    """A stream of events, each `event:` one of

    - `telemetry`: `{"device_id", "ts" (ISO 8601), "metrics", "seq"}`
    - `diagnosis`: the diagnosis JSON, `alert`: the alert event JSON (docs/payloads.md)
    - `ready` (first; `{"cursor", "streams", "devices"}`), `heartbeat` (every
      `INSA_API_LIVE_HEARTBEAT_SECONDS` when idle), `gap` (a resume missed more entries
      than are re-read: `{"stream", "after", "through"}`), and last `resume` (the client
      fell behind or Redis failed: reconnect from `id`).

    Every event's `id` is a **cursor**, one position per stream followed:
    `t=<entry id>;d=<entry id>;a=<entry id>` (telemetry, diagnostics, alerts; entry ids
    are Redis stream ids such as `1732500000000-0`). Reconnecting with it (EventSource's
    `Last-Event-ID`, or `?since=`) sends exactly the events after it, then live ones
    (at most `INSA_API_LIVE_BACKLOG_MAX` entries per stream are re-read; beyond, `gap`).
    Ids of live events and heartbeats also move past entries that were filtered out, so
    a quiet client's cursor stays recent. Diagnoses and alerts may be fleet-wide;
    telemetry needs `devices`. A caller scoped to one device sees only that device.
    Requires `Accept: text/event-stream`. A client that takes no bytes for
    `INSA_API_LIVE_SEND_TIMEOUT_SECONDS` is cut off (its connection reset).
    """
    if "text/event-stream" not in request.headers.get("accept", ""):
        return JSONResponse(errors.body("not_acceptable", "this endpoint streams server-sent "
                                        "events: send Accept: text/event-stream"), 406)
    query = live_request(res, who, streams, devices, last_event_id or since)
    hub, owner, per_owner = res.live, owner_of(who), res.settings.live_max_per_principal
    hub.admit(owner, per_owner)  # refused here with its status; follow() counts for real

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async with hub.follow(query.streams, query.devices, query.since, owner,
                                  per_owner) as feed:
                async for name, cursor, data in checked(res, who, feed.events()):
                    yield ServerSentEvent(data.decode(), event=name, id=cursor or None,
                                          retry=RESUME_RETRY_MS if name == "resume" else None)
        except (DependencyUnavailable, TooManyRequests) as exc:  # no id: it keeps its last
            yield ServerSentEvent(orjson.dumps({"reason": exc.message}).decode(),
                                  event="resume", retry=5 * RESUME_RETRY_MS)

    return LiveEventStream(stream(), ping=res.settings.live_heartbeat_seconds,
                           send_timeout=res.settings.live_send_timeout_seconds)


@router.websocket("/ws")
async def live_socket(websocket: WebSocket, res: Res, streams: StreamsQuery = None,
                      devices: DevicesQuery = None, since: SinceQuery = None,
                      access_token: TokenQuery = None) -> None:
    """The events of `GET /live/events`, one JSON text message each:
    `{"event": "alert", "id": "<cursor>", "data": {...}}`. Resume with `?since=<id>`.
    After a `resume` message the server closes with 1013 (try again later). A refused
    connection gets the HTTP error (401, 403, 404, 422, 429, 503) instead of the upgrade.
    A client that takes no message for `INSA_API_LIVE_SEND_TIMEOUT_SECONDS` is cut off."""
    per_owner, timeout = res.settings.live_max_per_principal, \
        res.settings.live_send_timeout_seconds
    try:
        who = await live_reader(websocket, res, access_token)
        query = live_request(res, who, streams, devices, since)
        res.live.admit(owner_of(who), per_owner)
    except InsaError as exc:
        code = getattr(exc, "reason", None) or exc.code
        await websocket.send_denial_response(JSONResponse(errors.body(code, exc.message),
                                                          errors.status_of(exc)))
        return
    await websocket.accept()

    async def pump() -> None:
        try:
            async with res.live.follow(query.streams, query.devices, query.since,
                                       owner_of(who), per_owner) as feed:
                async for name, cursor, data in checked(res, who, feed.events()):
                    await within(timeout, websocket.send_text(_frame(name, cursor or None,
                                                                     data)))
        except (DependencyUnavailable, TooManyRequests) as exc:
            await within(timeout, websocket.send_text(_frame(
                "resume", None, orjson.dumps({"reason": exc.message}))))
        # A feed ends only with `resume`: the client reconnects from the id it has.
        await within(timeout, websocket.close(TRY_AGAIN_LATER,
                                              "resume from the id of the last message"))

    async def listen() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the feed takes no messages; reading is how a close is noticed

    tasks = [asyncio.create_task(pump(), name="live-ws-send"),
             asyncio.create_task(listen(), name="live-ws-receive")]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Stalled):
            drop(websocket.scope, "websocket", timeout)
        # A client gone mid-send surfaces as a disconnect, a reset or a send after close.
        elif isinstance(result, Exception) and \
                not isinstance(result, WebSocketDisconnect | OSError | RuntimeError):
            log.warning("live websocket failed", error=f"{type(result).__name__}: {result}")


async def checked(res: Resources, who: Principal, events: AsyncIterator[Out],
                  every: float | None = None) -> AsyncIterator[Out]:
    """The feed's events while the caller's credential holds, re-checked at the first
    event after each heartbeat interval (heartbeats come when it is quiet): a revoked key,
    a disabled or demoted user or a lapsed token ends the feed with `revoked` (no id: the
    client keeps its position) instead of lasting as long as the connection."""
    every = res.settings.live_heartbeat_seconds if every is None else every
    checked_at = time.monotonic()
    async for event in events:
        if time.monotonic() - checked_at >= every:
            checked_at = time.monotonic()
            if not await still_valid(res, who):
                yield "revoked", "", orjson.dumps({"reason": "credentials no longer valid; "
                                                             "authenticate again"})
                return
        yield event


def _frame(name: str, cursor: str | None, data: bytes) -> str:
    """The message's JSON with the event's data spliced in as already encoded."""
    return (b'{"event":' + orjson.dumps(name) + b',"id":' + orjson.dumps(cursor) +
            b',"data":' + data + b"}").decode()


async def live_feed(res: Resources, stop: asyncio.Event) -> None:
    """The hub's stream readers, a BACKGROUND job for the app's lifetime."""
    await res.live.run(stop)
