"""ESP analytics on a small fleet whose every figure is worked out by hand below: a well
whose flow per amp fell 10 % with a warmer motor and more vibration, stops included; a new
well without a baseline; an offline well without data."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pytest

from services.api.analytics import WellStats, health, ramp
from tests.fixtures.api import Api
from tests.utils.db import execute
from tests.utils.telemetry import Row, iso, params, seed

END = datetime(2026, 1, 12, tzinfo=UTC)  # the window is the day before; baseline 7 days
STOPPED_HOUR = END - timedelta(hours=12)   # W-1 stopped the whole hour
PART_HOUR = END - timedelta(hours=3)       # W-1 stopped for its first two readings


def well_1() -> list[Row]:
    """Six readings an hour for eight days. Baseline week: flow 2000 bbl/d at 50 A (40 per
    amp), 80 degC, 1.0 mm/s. Window day: flow 1750/1850 (mean 1800) at 50 A (36 per amp,
    -10 %), 90 degC, 1.5 mm/s; one hour stopped, one with two stopped readings."""
    rows: list[Row] = []
    for hour in range(8 * 24):
        start = END - timedelta(days=8) + timedelta(hours=hour)
        for i in range(6):
            t = start + timedelta(minutes=10 * i)
            if start < END - timedelta(days=1):
                values = {"flow_rate": 2000.0, "motor_current": 50.0, "motor_temp": 80.0,
                          "vibration": 1.0, "pip": 900.0}
            elif start == STOPPED_HOUR or (start == PART_HOUR and i < 2):
                values = {"flow_rate": 0.0, "motor_current": 0.0, "motor_temp": 90.0,
                          "vibration": 0.0, "pip": 900.0}
            else:
                values = {"flow_rate": 1750.0 if i % 2 == 0 else 1850.0, "motor_current": 50.0,
                          "motor_temp": 90.0, "vibration": 1.5, "pip": 900.0}
            rows += [(t, name, value) for name, value in values.items()]
    return rows


def well_2() -> list[Row]:
    """A new well, the window only: 1000 bbl/d at 40 A (25 per amp), 95 degC, 0.5 mm/s."""
    return [(END - timedelta(days=1) + timedelta(minutes=10 * i), name, value)
            for i in range(144) for name, value in (
                ("flow_rate", 1000.0), ("motor_current", 40.0), ("motor_temp", 95.0),
                ("vibration", 0.5))]


async def fleet(db_url: str) -> None:
    await seed(db_url, "W-1", well_1(), status="online", tags=["pad-1"])
    await seed(db_url, "W-2", well_2(), status="online", tags=["pad-2"])
    await seed(db_url, "W-3", [], status="offline", tags=["pad-2"])
    await seed(db_url, "R-1", [(END, "tank_level", 3.0)], device_type="rtu")
    rule = "INSERT INTO rules (name, definition) VALUES ($1, '{}') RETURNING id"
    await execute(db_url, "INSERT INTO open_diagnoses (device_id, code, severity, confidence, "
                          "since, diagnosis_id) VALUES ('W-1', 'bearing_wear', 'critical', 0.9, "
                          "now(), 1), ('W-2', 'anomaly', 'info', 0.5, now(), 2)")
    for name, device, severity, state in (("pip_low", "W-2", "warning", "firing"),
                                          ("offline", "W-3", "critical", "acknowledged"),
                                          ("old", "W-1", "critical", "resolved")):
        await execute(db_url, f"WITH r AS ({rule}) INSERT INTO alerts (rule_id, device_id, "
                              "state, severity, message, active_since, fire_at) SELECT id, $2, "
                              "$3, $4, 'm', now(), now() FROM r", name, device, state, severity)


# Hand-computed: W-1's penalties (module docstring of services/api/analytics.py).
W1_PENALTIES = {"efficiency": 6.0,        # 30 · (0.10 - 0.05) / 0.25
                "vibration": 2.22,         # 20 · (1.5 - 1.25) / 2.25
                "motor_temp": 6.67,        # 20 · (10 - 5) / 15
                "motor_current": 0.0,      # at its baseline
                "open_issues": 25.0}       # an open critical diagnosis
W1_HEALTH = 60.1                           # 100 - 39.89
W2_HEALTH = 90.0                           # no baseline; a firing warning alert


async def test_performance_against_the_wells_own_baseline(api: Api, db_url: str) -> None:
    await fleet(db_url)
    viewer = await api.user("viewer")
    w1 = (await viewer.get("/analytics/wells/W-1/performance", params=params(end=END))).json()
    assert (w1["start"], w1["end"], w1["baseline_start"]) == (
        iso(END - timedelta(days=1)), iso(END), iso(END - timedelta(days=8)))
    assert (w1["hours"], w1["running_hours"], w1["baseline_hours"]) == (24, 22, 168)
    assert w1["run_fraction"] == pytest.approx(22 / 24)
    assert {k: w1[k] for k in ("flow_rate", "motor_current", "motor_temp", "vibration",
                               "efficiency")} == pytest.approx(
        {"flow_rate": 1800, "motor_current": 50, "motor_temp": 90, "vibration": 1.5,
         "efficiency": 36})
    assert w1["baseline"] == pytest.approx({"efficiency": 40, "motor_current": 50,
                                            "motor_temp": 80, "vibration": 1.0})
    assert w1["efficiency_change"] == pytest.approx(-0.10)
    assert w1["health_penalties"] == W1_PENALTIES
    assert w1["health"] == W1_HEALTH
    assert w1["open_issues"] == [{"kind": "diagnosis", "name": "bearing_wear",
                                  "severity": "critical"}]

    w2 = (await viewer.get("/analytics/wells/W-2/performance", params=params(end=END))).json()
    assert (w2["efficiency"], w2["baseline"], w2["efficiency_change"]) == (25.0, {}, None)
    assert w2["health"] == W2_HEALTH and w2["health_penalties"]["open_issues"] == 10.0
    w3 = (await viewer.get("/analytics/wells/W-3/performance", params=params(end=END))).json()
    assert (w3["running_hours"], w3["efficiency"], w3["health"]) == (0, None, None)
    assert (await viewer.get("/analytics/wells/W-9/performance")).status_code == 404
    device = api.client(key=await api.key("device", device_id="W-1"))
    assert (await device.get("/analytics/wells/W-1/performance")).status_code == 403


async def test_hourly_summary(api: Api, db_url: str) -> None:
    await fleet(db_url)
    response = await api.admin.get("/analytics/wells/W-1/summary", params=params(
        period="hourly", start=END - timedelta(hours=3), end=END - timedelta(hours=1)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "rollup_1m"
    part, full = body["buckets"]
    assert (part["bucket"], full["bucket"]) == (iso(PART_HOUR), iso(PART_HOUR
                                                                    + timedelta(hours=1)))
    # Two stopped readings of six: flow (0+0+1750+1850+1750+1850)/6, current 200/6.
    assert part == pytest.approx({
        "bucket": part["bucket"], "flow_rate": 1200, "pip": 900, "motor_current": 200 / 6,
        "motor_temp": 90, "motor_temp_max": 90, "vibration": 1.0, "vibration_max": 1.5,
        "vsd_frequency": None, "discharge_pressure": None, "run_fraction": 4 / 6,
        "runtime_hours": 4 / 6, "flow_per_amp": 36, "volume_bbl": 1200 / 24})
    assert full == pytest.approx({
        "bucket": full["bucket"], "flow_rate": 1800, "pip": 900, "motor_current": 50,
        "motor_temp": 90, "motor_temp_max": 90, "vibration": 1.5, "vibration_max": 1.5,
        "vsd_frequency": None, "discharge_pressure": None, "run_fraction": 1.0,
        "runtime_hours": 1.0, "flow_per_amp": 36, "volume_bbl": 1800 / 24})
    daily = (await api.admin.get("/analytics/wells/W-1/summary", params=params(
        period="daily", start=END - timedelta(days=2), end=END))).json()["buckets"]
    assert [d["flow_rate"] for d in daily] == pytest.approx(
        [2000, (22 * 6 * 1800 + 4 * 1800) / 144])
    too_long = await api.admin.get("/analytics/wells/W-1/summary", params=params(
        period="hourly", start=END - timedelta(days=40), end=END))
    assert too_long.status_code == 422 and too_long.json()["error"]["details"]["field"] == "end"


async def test_fleet_and_rankings(api: Api, db_url: str) -> None:
    await fleet(db_url)
    viewer = await api.user("viewer")
    everything = (await viewer.get("/analytics/fleet", params=params(end=END))).json()
    last_w1_flow = 1850.0  # W-1's latest reading: the last of its window
    assert everything == {
        "devices": 4, "online": 2, "offline": 1, "unknown": 1, "producing": 2,
        "total_flow_bbl_d": last_w1_flow + 1000, "wells_with_critical_alerts": 1,
        "wells_with_critical_diagnoses": 1,
        "average_health": round(statistics.fmean([W1_HEALTH, W2_HEALTH]), 1),
        "health_scored": 2, "window_hours": 24}
    pad_2 = (await viewer.get("/analytics/fleet", params=params(end=END, tag="pad-2"))).json()
    assert (pad_2["devices"], pad_2["producing"], pad_2["average_health"]) == (2, 1, W2_HEALTH)

    by_efficiency = (await viewer.get("/analytics/rankings", params=params(
        by="efficiency", end=END))).json()
    assert [(r["rank"], r["device_id"], r["efficiency"]) for r in by_efficiency] == [
        (1, "W-1", pytest.approx(36)), (2, "W-2", pytest.approx(25))]
    assert by_efficiency[0]["efficiency_baseline"] == pytest.approx(40)
    worst = (await viewer.get("/analytics/rankings", params=params(
        by="health", order="asc", limit=1, end=END))).json()
    assert [(r["device_id"], r["health"]) for r in worst] == [("W-1", W1_HEALTH)]


async def test_the_wells_limit_overrides_reach_the_health_score(api: Api, db_url: str) -> None:
    """The score is judged by the well's own diagnosis limits, merged as the diagnostics
    merge them: defaults < its type's < its own (diagnosis_limits)."""
    await fleet(db_url)
    limits = ("INSERT INTO diagnosis_limits (device_type, device_id, limits) "
              "VALUES ($1, $2, $3::jsonb)")
    # W-1 alone: full vibration penalty at 2.5 x baseline, full temperature one at +15 degC.
    await execute(db_url, limits, None, "W-1", '{"rules": {"bearing_wear": {"critical_ratio": '
                                               '2.5}, "overheating": {"critical_rise": 15}}}')
    # Every ESP: normal motor temperature up to 85 degC (W-2 has no baseline: judged by it).
    await execute(db_url, limits, "esp", None,
                  '{"ranges": {"motor_temp": {"normal": [60, 85]}}}')
    viewer = await api.user("viewer")
    w1 = (await viewer.get("/analytics/wells/W-1/performance", params=params(end=END))).json()
    assert w1["health_penalties"] == {**W1_PENALTIES,
                                      "vibration": 4.0,     # 20 · (1.5 - 1.25) / (2.5 - 1.25)
                                      "motor_temp": 10.0}   # 20 · (10 - 5) / (15 - 5)
    assert w1["health"] == 55.0                              # 100 - (6 + 4 + 10 + 0 + 25)
    w2 = (await viewer.get("/analytics/wells/W-2/performance", params=params(end=END))).json()
    assert w2["health_penalties"]["motor_temp"] == 6.67      # 20 · (95 - 85 - 5) / 15
    assert w2["health"] == 83.3                              # 100 - (6.67 + 10)
    everything = (await viewer.get("/analytics/fleet", params=params(end=END))).json()
    assert everything["average_health"] == round(statistics.fmean([55.0, 83.3]), 1)
    ranked = (await viewer.get("/analytics/rankings", params=params(by="health",
                                                                    end=END))).json()
    assert [(r["device_id"], r["health"]) for r in ranked] == [("W-2", 83.3), ("W-1", 55.0)]

    # The running current too: 1.3 x the 40 A normal low end is 52 A, above W-1's 50 A.
    await execute(db_url, "UPDATE diagnosis_limits SET limits = limits || $1::jsonb "
                          "WHERE device_id = 'W-1'",
                  '{"operation": {"running_min_current_ratio": 1.3}}')
    w1 = (await viewer.get("/analytics/wells/W-1/performance", params=params(end=END))).json()
    assert (w1["running_hours"], w1["efficiency"], w1["health"]) == (0, None, None)
    hour = (await viewer.get("/analytics/wells/W-1/summary", params=params(
        period="hourly", start=END - timedelta(hours=1), end=END))).json()["buckets"]
    assert [b["run_fraction"] for b in hour] == [0.0]


def test_health_score_edges() -> None:
    assert (ramp(0.05, 0.05, 0.30), ramp(0.175, 0.05, 0.30), ramp(1, 0.05, 0.30)) == \
        pytest.approx((0.0, 0.5, 1.0))
    # A full value at or below the onset (an override's): all or nothing at the full value.
    assert (ramp(1.1, 1.25, 1.2), ramp(1.2, 1.25, 1.2)) == (0.0, 1.0)
    base: dict[str, float | None] = {"efficiency": 40.0, "motor_current": 50.0,
                                     "motor_temp": 80.0, "vibration": 1.0}
    healthy = WellStats(1, hours=24, running_hours=24, flow_rate=2000, motor_current=50,
                        motor_temp=80, vibration=1.0, efficiency=40, base_hours=168, base=base)
    assert health(healthy).score == 100.0
    # Everything at or past its full penalty: floored at 0.
    sick = WellStats(1, hours=24, running_hours=24, flow_rate=1000, motor_current=70,
                     motor_temp=110, vibration=5.0, efficiency=20, base_hours=168, base=base)
    assert health(sick, ["critical"]).components == {
        "efficiency": 30.0, "vibration": 20.0, "motor_temp": 20.0, "motor_current": 15.0,
        "open_issues": 25.0}
    assert health(sick, ["critical"]).score == 0.0
    # Underload (-20 % current): 15 · (0.20 - 0.05) / 0.35.
    under = WellStats(1, hours=1, running_hours=1, motor_current=40, base_hours=168, base=base)
    assert health(under).components["motor_current"] == pytest.approx(6.43)
    # Too short a baseline is no baseline: only textbook vibration and temperature count.
    young = WellStats(1, hours=1, running_hours=1, motor_temp=100, vibration=3.0,
                      efficiency=10, base_hours=23, base=base)
    assert health(young).components == {"efficiency": 0.0, "vibration": 6.67,
                                        "motor_temp": 6.67, "motor_current": 0.0,
                                        "open_issues": 0.0}
    assert health(WellStats(1), ["warning"]).score is None
