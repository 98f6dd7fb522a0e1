"""Limits from each device (shared/alerting/limits.py) in the pure engine: a rule's value
from the device's equipment attributes, or relative to the well's own learned normal;
devices that lack an attribute skipped and said so; stops and starts not judged."""

from __future__ import annotations

from typing import Any

import pytest

from shared.alerting.evaluation import Device
from shared.errors import ValidationFailed
from tests.utils.alert_engine import engine_with, feed, rule, series

OVERLOAD = {"type": "threshold", "metric": "motor_current", "op": ">",
            "value": {"attribute": "motor_rated_current", "factor": 1.15}}


def test_a_limit_from_the_devices_own_nameplate() -> None:
    engine = engine_with(rule(**OVERLOAD), devices={
        "W-40": Device("esp", attributes={"motor_rated_current": 40.0}),
        "W-80": Device("esp", attributes={"motor_rated_current": 80.0})})
    # 50 A overloads a 40 A motor (limit 46 A), not an 80 A one (limit 92 A).
    assert feed(engine, "motor_current", series(45, 50, 44), device="W-40") == [
        ("firing", 10.0), ("resolved", 20.0)]
    assert feed(engine, "motor_current", series(45, 50, 90), device="W-80") == []
    assert engine.skipped() == {}
    assert rule(**OVERLOAD).threshold == "> 1.15 * motor_rated_current"


def test_a_device_lacking_the_attribute_is_skipped_and_said_so() -> None:
    engine = engine_with(rule(**OVERLOAD), devices={"W-1": Device("esp")})
    assert feed(engine, "motor_current", series(500, 900)) == []
    assert engine.skipped() == {(1, "W-1"): "no motor_rated_current attribute"}
    # Once it has one (the catalog refresh), it is judged.
    engine.set_device("W-1", Device("esp", attributes={"motor_rated_current": 40.0}), 20.0)
    assert feed(engine, "motor_current", series(60, start=30)) == [("firing", 30.0)]
    assert engine.skipped() == {}


def test_a_range_from_the_pumps_operating_range_while_running() -> None:
    flow = rule(type="range", metric="flow_rate", while_running=True,
                low={"attribute": "pump_min_flow"}, high={"attribute": "pump_max_flow"},
                clear_low={"attribute": "pump_min_flow", "factor": 1.05},
                clear_high={"attribute": "pump_max_flow", "factor": 0.95})
    engine = engine_with(flow, devices={"W-1": Device("esp", attributes={
        "pump_min_flow": 1000.0, "pump_max_flow": 3000.0})})
    # Every 10 minutes. Below the range fires; a stop (0 bbl/d) is not running below it:
    # it clears; the half hour after the restart is its drawdown, not judged; then below
    # fires again, inside the hysteresis band nothing changes, the clear band resolves.
    assert feed(engine, "flow_rate", series(1500, 900, 0, 800, 800, 800, 800, 1020, 1100,
                                            step=600)) == [
        ("firing", 600.0), ("resolved", 1200.0), ("firing", 3600.0), ("resolved", 4800.0)]
    assert flow.threshold == ("outside [pump_min_flow, pump_max_flow], clears inside "
                              "[1.05 * pump_min_flow, 0.95 * pump_max_flow]")


def test_an_empty_band_from_a_devices_attributes_is_skipped() -> None:
    band = rule(type="range", metric="motor_temp", low=0,
                high={"attribute": "motor_max_temp", "offset": -200})
    engine = engine_with(band, devices={"W-1": Device("esp", attributes={
        "motor_max_temp": 150.0})})
    assert feed(engine, "motor_temp", series(300)) == []
    assert engine.skipped() == {(1, "W-1"): "low must be below high"}


@pytest.mark.parametrize("limit", [{"attribute": "motor_rated_amps"},
                                   {"attribute": "motor_rated_current", "factor": 0}])
def test_a_bad_attribute_reference_is_refused(limit: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed, match="value"):
        rule(type="threshold", metric="motor_current", op=">", value=limit)


def test_without_a_nameplate_the_limit_is_relative_to_the_wells_own_normal() -> None:
    overload = rule(**{**OVERLOAD, "value": {**OVERLOAD["value"],  # type: ignore[dict-item]
                                             "otherwise": {"baseline": True, "factor": 1.3}}})
    engine = engine_with(overload, devices={
        "W-1": Device("esp"), "W-2": Device("esp", attributes={"motor_rated_current": 40.0})})
    # W-1 has no nameplate: its first 30 readings (about 30 A) are its normal, then 1.3
    # times it (39 A) is the limit: 38 A is fine, 40 A fires, 30 A resolves.
    learning = [30.0 + (n % 3 - 1) * 0.5 for n in range(30)]
    assert feed(engine, "motor_current", series(*learning, 38, 40, 30)) == [
        ("firing", 310.0), ("resolved", 320.0)]
    # W-2 has one: 46 A is its limit, whatever its normal.
    assert feed(engine, "motor_current", series(45, 47), device="W-2") == [("firing", 10.0)]
    assert engine.skipped() == {}
    assert overload.threshold == "> 1.15 * motor_rated_current (else 1.3 * its normal)"


def test_a_range_rule_refuses_a_fallback_it_could_not_use() -> None:
    with pytest.raises(ValidationFailed, match="otherwise"):
        rule(type="range", metric="flow_rate", low={
            "attribute": "pump_min_flow", "otherwise": {"baseline": True, "factor": 0.5}},
            high=5000.0)


def test_a_normal_never_learns_the_fault_it_judges() -> None:
    low = rule(type="threshold", metric="flow_rate", op="<", while_running=True,
               value={"baseline": True, "factor": 0.8})
    engine = engine_with(low)
    steady = [2000.0] * 30
    # A slow slide that holds the rule for hours is not learned: it stays below 80 % of
    # 2,000 and the alert stays firing; a stop (0) is false, then a return to 2,000.
    sliding = [1500.0 - n for n in range(200)]
    assert feed(engine, "flow_rate", series(*steady, *sliding, 0, 2000, step=600)) == [
        ("firing", 30 * 600.0), ("resolved", 230 * 600.0)]
