"""Diagnoses through the API: a well's history, what is open across the fleet, device
scoping, and the engine's dry run on a simulated faulty well (which stores nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.api.routes.diagnoses import MAX_READINGS
from services.simulator.scenario_file import (
    FleetConfig,
    fleet_records,
    make_instruments,
    plan_fleet,
)
from shared import db
from shared.diagnosis.catalog import CODES, action_for
from tests.fixtures.api import Api
from tests.utils.db import fetchval

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def seed(db_url: str) -> None:
    conn = await db.connect(db_url)  # with the platform's jsonb codec
    try:
        await insert(conn)
    finally:
        await conn.close()


async def insert(conn: Any) -> None:
    await conn.execute("INSERT INTO devices (device_id, device_type) VALUES "
                       "('W-1', 'esp'), ('W-2', 'esp'), ('P-1', 'pcp')")
    for device_id, minute, code, metric, severity, cleared in (
            ("W-1", 0, "gas_lock", None, "warning", False),
            ("W-1", 1, "gas_lock", None, "critical", False),
            ("W-1", 2, "sensor_fault", "pip", "warning", False),
            ("W-1", 3, "gas_lock", None, "critical", True),
            ("W-2", 1, "closed_valve", None, "critical", False),
            ("P-1", 2, "overheating", None, "critical", False)):
        await conn.execute("INSERT INTO diagnoses (device_id, ts, code, metric, severity, "
                           "cleared, confidence, evidence, action) "
                           "VALUES ($1, $2, $3, $4, $5, $6, 0.8, $7, 'look')",
                           device_id, at(minute), code, metric, severity, cleared,
                           {"metrics": {"pip": {"value": 900}}})
    await conn.execute("""
        INSERT INTO open_diagnoses (device_id, code, metric, severity, confidence, evidence,
                                    since, diagnosis_id)
        SELECT device_id, code, coalesce(metric, ''), severity, confidence, evidence, ts, id
        FROM diagnoses WHERE (device_id, code) IN (('W-1', 'sensor_fault'),
                                                    ('W-2', 'closed_valve'),
                                                    ('P-1', 'overheating'))""")


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = await get(client, path, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_a_wells_history_newest_first_filtered_and_paged(api: Api, db_url: str) -> None:
    await seed(db_url)
    viewer = await api.user("viewer")
    page = await get(viewer, "/devices/W-1/diagnoses")
    assert [(d["code"], d["severity"], d["cleared"]) for d in page["items"]] == [
        ("gas_lock", "critical", True), ("sensor_fault", "warning", False),
        ("gas_lock", "critical", False), ("gas_lock", "warning", False)]
    assert page["next_cursor"] is None
    newest = page["items"][0]
    assert newest["ts"] == iso(at(3)) and newest["name"] == "Gas lock"
    assert page["items"][1]["metric"] == "pip" and newest["metric"] is None
    assert newest["evidence"] == {"metrics": {"pip": {"value": 900}}}
    paged = await all_pages(viewer, "/devices/W-1/diagnoses", limit=1)
    assert [d["id"] for d in paged] == [d["id"] for d in page["items"]]
    filtered = await get(viewer, "/devices/W-1/diagnoses", code="gas_lock", severity="critical")
    assert [d["ts"] for d in filtered["items"]] == [iso(at(3)), iso(at(1))]
    several = await get(viewer, "/devices/W-1/diagnoses",
                        code=["sensor_fault", "gas_lock"], cleared="false")
    assert len(several["items"]) == 3
    window = await get(viewer, "/devices/W-1/diagnoses", start=iso(at(1)), end=iso(at(3)))
    assert [d["ts"] for d in window["items"]] == [iso(at(2)), iso(at(1))]
    for params, field in (({"code": "gremlins"}, "code"), ({"cursor": "bm9wZQ"}, "cursor"),
                          ({"start": iso(at(3)), "end": iso(at(1))}, "end"),
                          ({"start": "2026-11-22T10:00:00"}, "start")):
        refused = await viewer.get("/devices/W-1/diagnoses", params=params)
        assert refused.status_code == 422 and field in refused.json()["error"]["message"]
    missing = await viewer.get("/devices/W-9/diagnoses")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "device W-9 does not exist"


async def test_what_is_diagnosed_now_across_the_fleet(api: Api, db_url: str) -> None:
    await seed(db_url)
    viewer = await api.user("viewer")
    current = (await get(viewer, "/diagnoses/current"))["items"]
    assert [(d["device_id"], d["code"], d["metric"]) for d in current] == [
        ("P-1", "overheating", None), ("W-1", "sensor_fault", "pip"),
        ("W-2", "closed_valve", None)]
    valve = current[2]
    assert valve["device_type"] == "esp" and valve["since"] == iso(at(1))
    assert (valve["name"], valve["action"]) == (CODES["closed_valve"].name,
                                                action_for("closed_valve", "critical"))
    assert [d["device_id"] for d in await all_pages(viewer, "/diagnoses/current", limit=1)] \
        == ["P-1", "W-1", "W-2"]
    critical = (await get(viewer, "/diagnoses/critical"))["items"]
    assert [d["device_id"] for d in critical] == ["P-1", "W-2"]
    assert [d["device_id"] for d in (await get(viewer, "/diagnoses/critical",
                                               device_type="esp"))["items"]] == ["W-2"]
    assert [d["device_id"] for d in (await get(viewer, "/diagnoses/current",
                                               severity="warning"))["items"]] == ["W-1"]
    assert [d["device_id"] for d in (await get(
        viewer, "/diagnoses/current", code=["overheating", "sensor_fault"]))["items"]] == [
        "P-1", "W-1"]
    assert (await get(viewer, "/diagnoses/current", device_type="none"))["items"] == []
    refused = await viewer.get("/diagnoses/current", params={"severity": "bad"})
    assert refused.status_code == 422 and "severity" in refused.json()["error"]["message"]


async def test_a_device_scoped_key_sees_only_its_well(api: Api, db_url: str) -> None:
    await seed(db_url)
    scoped = api.client(key=await api.key("viewer", device_id="W-1"))
    assert [d["device_id"] for d in (await get(scoped, "/diagnoses/current"))["items"]] == \
        ["W-1"]
    assert (await get(scoped, "/diagnoses/critical"))["items"] == []
    assert len((await get(scoped, "/devices/W-1/diagnoses"))["items"]) == 4
    other = await scoped.get("/devices/W-2/diagnoses")
    assert other.status_code == 404, "another well's history does not exist for this key"


def faulty_well(fault: str) -> list[dict[str, Any]]:
    """Twelve hours of one simulated well a minute apart (720 readings: judged in a
    thread), as its controller publishes them (some metrics in field units: degF, in/s)."""
    cfg = FleetConfig(wells=1, hours=12, interval=60, seed=3, scenarios={"W-1": fault},
                      glitches=False)
    plans = plan_fleet(cfg)
    return [{"ts": iso(cfg.start + timedelta(seconds=r.t)), "telemetry": r.telemetry}
            for r in fleet_records(cfg, plans, make_instruments(cfg, plans))]


async def stored(db_url: str) -> list[int]:
    return [await fetchval(db_url, f"SELECT count(*) FROM {table}") for table in (
        "diagnoses", "open_diagnoses", "diagnostics_progress", "devices", "telemetry")]


async def test_analyze_diagnoses_a_faulty_series_and_stores_nothing(api: Api,
                                                                     db_url: str) -> None:
    engineer = await api.user("engineer")
    readings = faulty_well("closed_valve")
    assert any(isinstance(v, dict) and v["unit"] == "degF"
               for v in readings[0]["telemetry"].values())
    before = await stored(db_url)
    response = await engineer.post("/diagnostics/analyze", json={
        "device": {"device_id": "W-1", "device_type": "esp"},
        "readings": readings[::-1]})  # any order: judged in time order
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["device_id"], result["readings"], result["skipped"]) == \
        ("W-1", len(readings), 0)
    raised = [d for d in result["diagnoses"] if d["code"] == "closed_valve"]
    assert raised and raised[0]["severity"] == "critical" and not raised[0]["cleared"]
    assert readings[0]["ts"] < raised[0]["ts"] <= readings[-1]["ts"]
    assert raised[0]["action"] and raised[0]["name"] and 0 < raised[0]["confidence"] <= 1
    assert "closed_valve" in {d["code"] for d in result["open"]}
    assert not any(d["code"] == "closed_valve" and d["severity"] == "critical"
                   for d in result["diagnoses"] if d["ts"] < readings[60]["ts"]), \
        "nothing before the fault (it starts after the first hour)"
    assert await stored(db_url) == before == [0, 0, 0, 0, 0]
    healthy = (await engineer.post("/diagnostics/analyze",
                                   json={"readings": readings[:60]})).json()
    assert healthy["device_id"] == "analysis"
    assert not [d for d in healthy["diagnoses"] if d["severity"] != "info"]
    viewer = await api.user("viewer")
    assert (await viewer.post("/diagnostics/analyze", json={"readings": readings[:5]})
            ).status_code == 403


async def test_analyze_refuses_bad_readings_naming_the_field(api: Api) -> None:
    engineer = await api.user("engineer")
    good = {"ts": "2026-11-22T10:00:00Z", "telemetry": {"pip": 900}}
    for readings, code, message in (
            ([good, {"telemetry": {"pip": 900}}], "missing_timestamp", "readings.1.ts: "),
            ([{**good, "telemetry": {"pip": {"value": 9, "unit": "furlong"}}}], "bad_unit",
             "readings.0: unknown unit 'furlong' for pip"),
            ([good, {**good, "telemetry": {"pip": [1]}}], "schema_violation",
             "readings.1: telemetry.pip: must be a number"),
            ([{**good, "ts": "yesterday"}], "invalid_timestamp", "readings.0: ts"),
            ([{**good, "telemetry": {}}], "no_values", "readings.0: "),
            ([], "validation", "body.readings: List should have at least 1 item"),
            ([good] * (MAX_READINGS + 1), "validation",
             f"body.readings: List should have at most {MAX_READINGS} items"),
            (["nope"], "validation", "body.readings.0: Input should be a valid dictionary")):
        response = await engineer.post("/diagnostics/analyze", json={"readings": readings})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["message"][:len(message)]) == (code, message), error
    bad_device = await engineer.post("/diagnostics/analyze", json={
        "device": {"device_id": "W 1"}, "readings": [good]})
    assert bad_device.status_code == 422
    assert bad_device.json()["error"]["message"].startswith("body.device.device_id:")
