"""The live feed: SSE and WebSocket over the Redis streams, filtered by request and scope,
resumable without gaps or duplicates, with slow clients cut off rather than buffered."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as redis
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.api.live import LiveHub
from shared.streams import (
    ALERTS,
)
from tests.fixtures.api import Api
from tests.utils.db import execute
from tests.utils.live import (
    ACCEPT,
    add_alert,
    add_diagnosis,
    add_telemetry,
    kinds,
    own,
    position,
    sse,
    xadd,
)
from tests.utils.raw_http import Peer, request
from tests.utils.waiting import wait_until


def hub_of(api: Api) -> LiveHub:
    hub: LiveHub = api.app.state.resources.live
    return hub


# --- SSE -----------------------------------------------------------------------------------
async def test_sse_sends_the_chosen_devices_telemetry_and_alerts(api: Api,
                                                                 streams: redis.Redis) -> None:
    viewer = await api.user("viewer")
    async with sse(viewer, streams="telemetry,alerts", devices="W-1") as feed:
        await add_telemetry(streams, "W-2", {"pip": 1.0})
        entry = await add_telemetry(streams, "W-1", {"pip": 850.5, "mode": "auto"}, seq=7)
        await add_alert(streams, "W-2")
        alert_entry, alert = await add_alert(streams, "W-1")
        got = kinds(await feed.take(2))  # streams are independent: no order between them
    telemetry, alerted = got["telemetry"], got["alert"]
    assert telemetry.event == "telemetry" and position(telemetry.id, "t") == entry
    assert telemetry.data == {"device_id": "W-1", "ts": "2026-11-18T11:06:40.123000Z",
                              "metrics": {"pip": 850.5, "mode": "auto"}, "seq": 7}
    assert re.fullmatch(r"t=\d+-\d+;a=\d+-\d+", telemetry.id or "")
    assert alerted.event == "alert" and alerted.data == alert
    assert position(alerted.id, "a") == alert_entry
    await wait_until(lambda: asyncio.sleep(0, hub_of(api).clients), lambda n: n == 0,
                     what="the disconnected client to be unsubscribed")


async def test_fleet_wide_diagnoses_and_alerts_by_default(api: Api,
                                                          streams: redis.Redis) -> None:
    viewer = await api.user("viewer")
    async with sse(viewer) as feed:
        _, diagnosis = await add_diagnosis(streams, "W-3")
        _, alert = await add_alert(streams, "W-4")
        await add_telemetry(streams, "W-3", {"pip": 1.0})  # telemetry is never fleet-wide
        got = kinds(await feed.take(2))
    assert got["diagnosis"].data == diagnosis and got["alert"].data == alert
    assert re.fullmatch(r"d=\d+-\d+;a=\d+-\d+", got["alert"].id or "")


async def test_resume_with_last_event_id_sends_exactly_what_was_missed(
        api: Api, streams: redis.Redis) -> None:
    viewer = await api.user("viewer")
    async with sse(viewer, devices="W-1") as feed:
        await add_telemetry(streams, "W-1", {"pip": 1.0})
        await add_alert(streams, "W-1")
        seen = await feed.take(2)
    last = seen[-1].id  # every id covers every stream followed
    assert last is not None and set(kinds(seen)) == {"telemetry", "alert"}
    # Missed while disconnected; W-2's reading is not for this client.
    missed = [await add_telemetry(streams, "W-1", {"pip": 2.0})]
    await add_telemetry(streams, "W-2", {"pip": 9.0})
    missed.append((await add_alert(streams, "W-1"))[0])
    missed.append((await add_diagnosis(streams, "W-1"))[0])
    async with sse(viewer, {"Last-Event-ID": last}, devices="W-1") as feed:
        resumed = await feed.take(3)
        live_entry, _ = await add_alert(streams, "W-1")
        live = await feed.next()
    got = kinds(resumed)
    assert [own(kind, got[kind].id) for kind in ("telemetry", "alert", "diagnosis")] == missed
    assert got["telemetry"].data["metrics"] == {"pip": 2.0}
    assert live.event == "alert" and position(live.id, "a") == live_entry  # no repeat first
    # ?since= does the same when no Last-Event-ID is sent.
    async with sse(viewer, since=last, devices="W-1") as feed:
        again = await feed.take(4)
    assert sorted((own(e.event, e.id), e.event) for e in again) == \
        sorted((own(e.event, e.id), e.event) for e in [*resumed, live])


async def test_a_device_scoped_key_sees_only_its_device(api: Api, streams: redis.Redis,
                                                        db_url: str) -> None:
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ($1)", "W-1")
    scoped = api.client(key=await api.key("viewer", device_id="W-1"))
    async with sse(scoped, streams="alerts") as feed:
        await add_alert(streams, "W-2")
        _, alert = await add_alert(streams, "W-1")
        event = await feed.next()
    assert event.data == alert
    other = await scoped.get("/live/events", params={"devices": "W-2"}, headers=ACCEPT)
    assert other.status_code == 404


async def test_who_may_follow_and_what_they_may_ask(api: Api, streams: redis.Redis,
                                                    db_url: str) -> None:
    url = "/live/events"
    assert (await api.client().get(url, headers=ACCEPT)).status_code == 401
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ($1)", "W-1")
    device = api.client(key=await api.key("device", device_id="W-1"))
    assert (await device.get(url, headers=ACCEPT)).status_code == 403
    await api.user("viewer", "vera")
    token = (await api.login("vera"))["access_token"]
    async with sse(api.client(), access_token=token, streams="alerts") as feed:
        _, alert = await add_alert(streams, "W-1")
        assert (await feed.next()).data == alert
    bad_token = await api.client().get(url, params={"access_token": "nope"}, headers=ACCEPT)
    assert bad_token.status_code == 401
    viewer = api.client(token)
    assert (await viewer.get(url)).status_code == 406  # not an event-stream request
    for params, field in (({"streams": "telemetry"}, "devices"),
                          ({"streams": "weather"}, "streams"),
                          ({"devices": ",".join(f"W-{i}" for i in range(101))}, "devices"),
                          ({"devices": "W/1"}, "devices"),
                          ({"since": "x=1-0"}, "since")):
        refused = await viewer.get(url, params=params, headers=ACCEPT)
        assert refused.status_code == 422, params
        assert refused.json()["error"]["details"] == {"field": field}


# --- WebSocket -----------------------------------------------------------------------------
async def test_websocket_gets_the_same_events(api: Api, streams: redis.Redis) -> None:
    await api.user("viewer", "wendy")
    token = (await api.login("wendy"))["access_token"]
    base = api.url.replace("http://", "ws://") + "/api/v1/live/ws"
    query = f"?streams=alerts,telemetry&devices=W-1&access_token={token}"
    async with connect(base + query) as ws, sse(api.client(token), streams="alerts,telemetry",
                                               devices="W-1") as feed:
        ready = orjson.loads(await ws.recv())
        assert ready["event"] == "ready" and ready["data"]["devices"] == ["W-1"]
        await add_alert(streams, "W-2")
        await add_alert(streams, "W-1")
        await add_telemetry(streams, "W-1", {"pip": 3.0})
        messages = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        events = await feed.take(2)
    assert sorted((m["event"], own(m["event"], m["id"]), orjson.dumps(m["data"]))
                  for m in messages) == \
        sorted((e.event, own(e.event, e.id), orjson.dumps(e.data)) for e in events)
    # Resume over the socket from the ready cursor: the same two, then nothing repeated.
    async with connect(base + query + f"&since={ready['id']}") as ws:
        resumed = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
    assert sorted(own(m["event"], m["id"]) for m in resumed[1:]) == \
        sorted(own(m["event"], m["id"]) for m in messages)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(base + "?streams=alerts"):
            pass
    assert refused.value.response.status_code == 401


# --- what one client may hold -------------------------------------------------------------
@pytest.mark.parametrize("api_overrides", [{
    "live_max_clients": 3, "live_max_per_principal": 2, "live_send_timeout_seconds": 1.0}])
async def test_one_caller_or_a_stalled_client_cannot_hold_the_feed(
        api: Api, streams: redis.Redis) -> None:
    await api.user("viewer", "greedy")
    token = (await api.login("greedy"))["access_token"]
    viewer = api.client(token)
    socket_url = api.url.replace("http://", "ws://") + \
        f"/api/v1/live/ws?streams=alerts&access_token={token}"
    async with sse(viewer, streams="alerts"), sse(viewer, streams="alerts"):
        async with viewer.stream("GET", "/live/events", params={"streams": "alerts"},
                                 headers=ACCEPT) as third:
            assert third.status_code == 429 and third.headers["Retry-After"] == "5"
            assert orjson.loads(await third.aread())["error"]["code"] == "too_many_live_feeds"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(socket_url):
                pass
        assert refused.value.response.status_code == 429
        async with sse(api.admin, streams="alerts"):  # the process's last slot is the admin's
            assert hub_of(api).clients == 3
    await wait_until(lambda: asyncio.sleep(0, hub_of(api).clients), lambda n: n == 0,
                     what="the feeds to be released")

    # Two clients that stop reading (their receive buffers tiny), over SSE and WebSocket:
    # each is cut off once a send waits a second, with one line and no traceback.
    auth = {"Authorization": f"Bearer {token}"}
    stalled = [await Peer.open(api.url, receive_buffer=4096) for _ in range(2)]
    await stalled[0].send(request("GET", "/api/v1/live/events?streams=alerts",
                                  {**auth, **ACCEPT}))
    await stalled[1].send(request("GET", "/api/v1/live/ws?streams=alerts", {
        **auth, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}))
    assert [(await peer.head())[0] for peer in stalled] == [200, 101]
    for peer in stalled:
        peer.stop_reading()
    errors = Records()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        with structlog.testing.capture_logs() as logs:
            big = orjson.dumps({"device_id": "W-1", "event": "firing", "note": "x" * 65536})
            for _ in range(64):  # until both are cut off: kernel buffers take a few MB
                for _ in range(16):
                    await xadd(streams, ALERTS, {"alert": big})
                await asyncio.sleep(0.2)
                if hub_of(api).clients == 0:
                    break
            assert hub_of(api).clients == 0, "a client that stopped reading was not dropped"
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
    dropped = [e for e in logs if e["event"] == "live client dropped: it took no bytes"]
    assert sorted(e["transport"] for e in dropped) == ["sse", "websocket"]
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert errors.records == []
    for peer in stalled:  # reset by the server
        assert peer.transport is not None
        peer.transport.resume_reading()
        await asyncio.wait_for(peer.closed.wait(), 10)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


# --- scale ---------------------------------------------------------------------------------
@pytest.mark.parametrize("api_overrides", [{"live_max_per_principal": 200}])
async def test_two_hundred_sse_clients_on_one_hub(api: Api, streams: redis.Redis) -> None:
    await api.user("viewer", "many")
    token = (await api.login("many"))["access_token"]
    async with httpx.AsyncClient(base_url=f"{api.url}/api/v1", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"},
                                 limits=httpx.Limits(max_connections=None)) as client, \
            contextlib.AsyncExitStack() as stack:
        feeds = await asyncio.gather(*(stack.enter_async_context(sse(client, streams="alerts"))
                                       for _ in range(200)))
        assert hub_of(api).clients == 200
        _, alert = await add_alert(streams, "W-9")
        received = await asyncio.gather(*(feed.next(timeout=20) for feed in feeds))
        assert all(e.event == "alert" and e.data == alert for e in received)
    await wait_until(lambda: asyncio.sleep(0, hub_of(api).clients), lambda n: n == 0,
                     what="every client to be unsubscribed")
    assert hub_of(api).readers["alerts"].subscribers == 0


async def test_a_feed_ends_when_its_credential_is_revoked_or_lapses(api: Api) -> None:
    from services.api.routes.live import checked
    from services.api.security import keys

    res = api.app.state.resources
    key = await api.key("viewer")
    who = await keys.authenticate(res.pool, key)
    assert who is not None

    async def ticking() -> AsyncIterator[tuple[str, str, bytes]]:
        for n in itertools.count():
            await asyncio.sleep(0.05)
            yield "heartbeat", f"a={n}-0", b"{}"

    seen = []
    async for name, _, _ in checked(res, who, ticking(), every=0.1):
        seen.append(name)
        if len(seen) == 3:
            [row] = [k for k in (await api.admin.get("/api-keys")).json() if k["prefix"] in key]
            assert (await api.admin.delete(f"/api-keys/{row['id']}")).status_code == 204
    assert seen[:3] == ["heartbeat"] * 3 and seen[-1] == "revoked"
    other = await keys.authenticate(res.pool, await api.key("viewer"))
    assert other is not None
    lapsed = dataclasses.replace(other, expires=time.time() - 1)
    assert [n async for n, _, _ in checked(res, lapsed, ticking(), every=0.0)] == ["revoked"]
