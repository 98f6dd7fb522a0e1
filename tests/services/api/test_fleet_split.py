"""A large fleet page written in two halves at once (routes/telemetry.py, SPLIT_ABOVE) is
the one-query page to the byte, cursors included, for every filter and across pages. The
threshold is lowered here so that a dozen devices make "large" pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from services.api import telemetry_json
from services.api.routes import telemetry as route
from tests.fixtures.api import Api
from tests.utils.db import execute
from tests.utils.telemetry import seed

T0 = datetime(2026, 1, 5, tzinfo=UTC)
ONE_QUERY = 10**9  # SPLIT_ABOVE under which every page is one query
SPLIT = 2  # SPLIT_ABOVE that splits every page of more than two devices


async def fleet(db_url: str) -> None:
    """Eleven devices of two types and tags (one without any value, one with text and a
    device's own unit), ids chosen to sort apart from their insertion order."""
    for n, device_id in enumerate(["W-07", "R-1", "W-10", "W-01", "W-02", "X-9", "W-03",
                                   "R-2", "W-05", "W-04", "W-06"]):
        kind = "rtu" if device_id.startswith("R") else "esp"
        rows: list[tuple[datetime, str, float | str]] = [
            (T0 + timedelta(seconds=n, microseconds=n * 1000), "flow_rate", 2400.0 + n / 8),
            (T0, "pip", 850.0 + n)]
        if n % 3 == 0:
            rows.append((T0 + timedelta(minutes=n), "mode", f'say "{n}"'))
        if n % 4 == 1:
            rows.append((T0, "odd_metric", -0.001 * n))
        await seed(db_url, device_id, [] if device_id == "X-9" else rows,
                   device_type=kind, tags=["pad-3"] if n % 2 else ["pad-4", "pad-3"],
                   status="online" if n % 2 else "unknown")
    await execute(db_url, "INSERT INTO device_units (device, metric, unit) "
                  "SELECT d.id, m.id, 'm3/d' FROM devices d, metrics m "
                  "WHERE d.device_id = 'W-04' AND m.name = 'odd_metric'")


async def walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[bytes]:
    """Every page's body, following next_cursor."""
    bodies: list[bytes] = []
    params = dict(params)
    while True:
        response = await client.get("/telemetry/latest", params=params)
        assert response.status_code == 200, response.text
        bodies.append(response.content)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return bodies
        params["cursor"] = cursor


FILTERS: list[dict[str, Any]] = [
    {}, {"device_type": "esp"}, {"device_type": "rtu"}, {"tag": "pad-4"}, {"tag": "pad-3"},
    {"tag": "none-such"}, {"metrics": "pip,mode"}, {"metrics": "odd_metric,nothing"},
    {"device_type": "esp", "tag": "pad-4", "metrics": "flow_rate"}]


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """The API pool's fleet queries ("ids": FLEET_IDS, "page": LATEST_FLEET, and their
    arguments), in the order they were issued."""
    seen: list[tuple[str, tuple[Any, ...]]] = []
    fetch = asyncpg.Pool.fetch

    async def spy(pool: asyncpg.Pool, query: str, *args: Any, **kw: Any) -> Any:
        if query in (telemetry_json.FLEET_IDS, telemetry_json.LATEST_FLEET):
            seen.append(("ids" if query == telemetry_json.FLEET_IDS else "page", args))
        return await fetch(pool, query, *args, **kw)

    monkeypatch.setattr(asyncpg.Pool, "fetch", spy)
    return seen


async def test_split_pages_are_the_one_query_pages_to_the_byte(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch,
        queries: list[tuple[str, tuple[Any, ...]]]) -> None:
    await fleet(db_url)
    scoped = api.client(key=await api.key("viewer", device_id="W-03"))
    for client, filters in [(api.admin, f) for f in FILTERS] + [(scoped, {})]:
        for limit in (1, 2, 3, 4, 5, 7, 11, 50):
            params = {**filters, "limit": limit}
            monkeypatch.setattr(route, "SPLIT_ABOVE", ONE_QUERY)
            queries.clear()
            one = await walk(client, params)
            assert {kind for kind, _ in queries} == {"page"}, "one query a page"
            assert len(queries) == len(one)
            monkeypatch.setattr(route, "SPLIT_ABOVE", SPLIT)
            queries.clear()
            split = await walk(client, params)
            assert split == one, (client is scoped, filters, limit)
            if limit > SPLIT and client is api.admin and not filters:
                # The whole fleet: per page its ids, then its two halves (lo, mid], (mid, hi].
                assert [k for k, _ in queries[:3]] == ["ids", "page", "page"]
                (_, first), (_, second) = queries[1:3]
                assert first[3] is None and first[4] == second[3] and second[4] is not None


async def test_split_pages_hold_every_device_once_in_order(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch,
        queries: list[tuple[str, tuple[Any, ...]]]) -> None:
    await fleet(db_url)
    monkeypatch.setattr(route, "SPLIT_ABOVE", SPLIT)
    ids = sorted(["W-07", "R-1", "W-10", "W-01", "W-02", "X-9", "W-03", "R-2", "W-05",
                  "W-04", "W-06"])
    pages = [orjson.loads(b) for b in await walk(api.admin, {"limit": 4})]
    assert [[d["device_id"] for d in p["items"]] for p in pages] == \
        [ids[0:4], ids[4:8], ids[8:11]]
    assert [k for k, _ in queries] == ["ids", "page", "page"] * 2 + ["ids", "page", "page"]
    everything = orjson.loads((await walk(api.admin, {"limit": 50}))[0])
    assert [d["device_id"] for d in everything["items"]] == ids
    assert everything["items"][ids.index("W-04")]["metrics"]["odd_metric"]["unit"] == "m3/d"
    assert everything["items"][ids.index("X-9")]["metrics"] == {}


async def test_a_device_added_while_a_page_is_split_is_not_skipped(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its half holds it: the page stays `limit` long and the next starts after it."""
    await fleet(db_url)
    monkeypatch.setattr(route, "SPLIT_ABOVE", SPLIT)
    fetch = asyncpg.Pool.fetch

    async def adding(pool: asyncpg.Pool, query: str, *args: Any, **kw: Any) -> Any:
        rows = await fetch(pool, query, *args, **kw)
        if query == telemetry_json.FLEET_IDS:
            await seed(db_url, "W-015", [(T0, "pip", 1.0)])  # after W-01, before W-02
        return rows

    monkeypatch.setattr(asyncpg.Pool, "fetch", adding)
    first = orjson.loads((await api.admin.get("/telemetry/latest",
                                              params={"limit": 4})).content)
    assert [d["device_id"] for d in first["items"]] == ["R-1", "R-2", "W-01", "W-015"]
    monkeypatch.setattr(asyncpg.Pool, "fetch", fetch)
    second = orjson.loads((await api.admin.get("/telemetry/latest", params={
        "limit": 4, "cursor": first["next_cursor"]})).content)
    assert [d["device_id"] for d in second["items"]] == ["W-02", "W-03", "W-04", "W-05"]


async def test_a_page_whose_devices_all_leave_the_filter_meanwhile_does_not_end_the_walk(
        api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page comes back empty, with a cursor after the devices its ids had: the devices
    still tagged after them are on the next page."""
    await fleet(db_url)
    monkeypatch.setattr(route, "SPLIT_ABOVE", SPLIT)
    fetch = asyncpg.Pool.fetch
    first_page = ["W-02", "W-03", "W-05", "W-06"]  # the first four with the tag pad-4

    async def untagging(pool: asyncpg.Pool, query: str, *args: Any, **kw: Any) -> Any:
        rows = await fetch(pool, query, *args, **kw)
        if query == telemetry_json.FLEET_IDS and args[3] is None:
            await execute(db_url, "UPDATE devices SET metadata = '{}' "
                          "WHERE device_id = any($1::text[])", first_page)
        return rows

    monkeypatch.setattr(asyncpg.Pool, "fetch", untagging)
    first = orjson.loads((await api.admin.get(
        "/telemetry/latest", params={"tag": "pad-4", "limit": 4})).content)
    assert first["items"] == [] and first["next_cursor"] is not None
    monkeypatch.setattr(asyncpg.Pool, "fetch", fetch)
    rest = [orjson.loads(b) for b in await walk(api.admin, {
        "tag": "pad-4", "limit": 4, "cursor": first["next_cursor"]})]
    assert [d["device_id"] for p in rest for d in p["items"]] == ["W-07", "W-10"]
