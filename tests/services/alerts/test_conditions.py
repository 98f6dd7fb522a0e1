"""Each rule type's condition in the pure engine: the exact reading (or tick) at which an
alert fires and clears. Timestamps are event-time seconds 0, 10, 20, ...; values are in
canonical units."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from shared.alerting.conditions import Window
from shared.alerting.evaluation import Device, Transition
from shared.alerting.rules import Rule
from tests.utils.alert_engine import (
    Point,
    Seen,
    diagnose,
    engine_with,
    feed,
    hot,
    no_head,
    rule,
    seen,
    series,
    ticks,
)


def reference(points: Sequence[Point], judge: Callable[[float, list[Point]], bool | None]
              ) -> Seen:
    """What the engine must do with for=0, recomputed by brute force: `judge(ts, the
    points watched so far)` says fire (True), clear (False) or hold (None)."""
    out: Seen = []
    firing = False
    for i, (ts, _) in enumerate(points):
        verdict = judge(ts, list(points[:i + 1]))
        if verdict is True and not firing:
            out.append(("firing", ts))
            firing = True
        elif verdict is False and firing:
            out.append(("resolved", ts))
            firing = False
    return out


def in_window(ts: float, watched: list[Point], seconds: float) -> list[float]:
    return [v for t, v in watched if t >= ts - seconds]


# --- threshold -----------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "expected"), [
    (">", [("firing", 20), ("resolved", 30)]),
    (">=", [("firing", 10), ("resolved", 40)]),
    ("<", [("firing", 0), ("resolved", 10), ("firing", 40)]),
    ("<=", [("firing", 0), ("resolved", 20), ("firing", 30)]),
    ("==", [("firing", 10), ("resolved", 20), ("firing", 30), ("resolved", 40)]),
    ("!=", [("firing", 0), ("resolved", 10), ("firing", 20), ("resolved", 30),
            ("firing", 40)]),
])
def test_threshold_fires_and_clears_at_the_readings_its_op_says(op: str, expected: Seen
                                                                 ) -> None:
    engine = engine_with(hot(op=op))
    assert feed(engine, "motor_temp", series(140, 150, 160, 150, 140)) == expected


def test_a_firing_transition_carries_value_severity_and_rendered_message() -> None:
    engine = engine_with(hot(name="motor too hot", severity="critical",
                             message="{rule} {state} on {device_id}: {value} ({threshold})"))
    assert engine.observe_reading("W-1", 0, {"motor_temp": 140.0}) == []
    [fired] = engine.observe_reading("W-1", 10, {"motor_temp": 152.5})
    assert (fired.kind, fired.before, fired.at, fired.value, fired.severity, fired.message) == \
        ("firing", None, 10, 152.5, "critical", "motor too hot firing on W-1: 152.5 (> 150)")
    assert (fired.alert.rule_id, fired.alert.device_id, fired.alert.active_since,
            fired.alert.fired_at) == (1, "W-1", 10, 10)
    assert engine.observe_reading("W-1", 20, {"motor_temp": 155.0}) == []
    [resolved] = engine.observe_reading("W-1", 30, {"motor_temp": 141.0})
    assert (resolved.kind, resolved.before, resolved.value, resolved.message) == \
        ("resolved", "firing", 141.0, "motor too hot resolved on W-1: 141 (> 150)")
    assert engine.open == {}


def test_other_metrics_and_other_devices_are_judged_apart() -> None:
    engine = engine_with(hot())
    out = engine.observe_reading("W-1", 0, {"motor_temp": 160.0, "pip": 900.0})
    out += engine.observe_reading("W-2", 0, {"motor_temp": 140.0, "pip": 160.0})
    out += engine.observe_reading("W-2", 10, {"motor_temp": 151.0})
    assert [(t.kind, t.alert.device_id, t.at) for t in out] == \
        [("firing", "W-1", 0), ("firing", "W-2", 10)]


# --- range ---------------------------------------------------------------------------------
CURRENT_BAND = {"type": "range", "metric": "motor_current", "low": 20.0, "high": 60.0,
                "clear_low": 25.0, "clear_high": 55.0}


@pytest.mark.parametrize(("values", "expected"), [
    ((50, 61, 57, 58, 55), [("firing", 10), ("resolved", 40)]),
    ((50, 19, 22, 24.9, 25), [("firing", 10), ("resolved", 40)]),
    ((50, 61, 15, 57, 40), [("firing", 10), ("resolved", 40)]),
    ((50, 60, 20, 55, 25), []),
], ids=["above, held in band, clears at clear_high", "below, clears at clear_low",
        "from high to low stays one alert", "the limits themselves are inside"])
def test_range_fires_outside_the_band_and_clears_only_inside_the_clear_band(
        values: tuple[float, ...], expected: Seen) -> None:
    engine = engine_with(rule(**CURRENT_BAND))
    assert feed(engine, "motor_current", series(*values)) == expected


def test_hysteresis_turns_a_value_hovering_at_the_limit_into_one_alert() -> None:
    rng = random.Random(20240611)
    values = [rng.uniform(45, 50) for _ in range(30)] + \
        [rng.uniform(57, 63) for _ in range(120)] + [rng.uniform(45, 50) for _ in range(30)]
    points = series(*values)
    first_over = next(ts for ts, v in points if v > 60)

    with_band = feed(engine_with(rule(**CURRENT_BAND)), "motor_current", points)
    assert with_band == [("firing", first_over), ("resolved", 150 * 10)]

    plain = feed(engine_with(rule(type="threshold", metric="motor_current", op=">",
                                  value=60.0)), "motor_current", points)
    assert plain == reference(points, lambda ts, watched: watched[-1][1] > 60)
    assert sum(kind == "firing" for kind, _ in plain) >= 20  # flaps: one alert per crossing


# --- rate_of_change and window ---------------------------------------------------------------
def test_rate_of_change_is_judged_only_once_a_whole_window_has_been_watched() -> None:
    # discharge pressure falls 50 psi every 10 s (300 psi/min) from the first reading,
    # then holds at 2300 psi from 100 s.
    points = [(float(ts), 2800.0 - 5 * min(ts, 100)) for ts in range(0, 200, 10)]
    engine = engine_with(rule(type="rate_of_change", metric="discharge_pressure",
                              window_seconds=60, per_seconds=60, op="<", value=-100.0))
    out = [t for ts, v in points
           for t in engine.observe_reading("W-1", ts, {"discharge_pressure": v})]
    # At 140 s the window's oldest point is 80 s (2400 psi): -100 psi/min, no longer < -100.
    assert seen(out) == [("firing", 60), ("resolved", 140)]
    assert out[0].value == pytest.approx(-300.0) and out[1].value == pytest.approx(-100.0)


def test_rate_of_change_matches_a_recomputation_on_random_data() -> None:
    rng = random.Random(5)
    points: list[Point] = []
    ts, pip = 0.0, 900.0
    for _ in range(600):
        ts += rng.choice((5.0, 10.0, 10.0, 15.0, 45.0))
        pip += rng.gauss(0, 8)
        points.append((ts, pip))

    def judge(now: float, watched: list[Point]) -> bool | None:
        window = [(t, v) for t, v in watched if t >= now - 120]
        if now - watched[0][0] < 120 or window[0][0] >= now:
            return None
        return (window[-1][1] - window[0][1]) / (now - window[0][0]) * 60 > 5.0

    expected = reference(points, judge)
    engine = engine_with(rule(type="rate_of_change", metric="pip", window_seconds=120,
                              per_seconds=60, op=">", value=5.0))
    assert len(expected) >= 6
    assert feed(engine, "pip", points) == expected


BRUTE: dict[str, Callable[[list[float]], float]] = {
    "avg": statistics.fmean, "min": min, "max": max, "stddev": statistics.pstdev,
    "count": lambda values: float(len(values))}


def random_pip(seed: int, count: int, *, gap: float = 30.0) -> list[Point]:
    """A pip-like walk (psi) at irregular intervals, now and then a gap longer than the
    windows under test."""
    rng = random.Random(seed)
    points: list[Point] = []
    ts, pip = 0.0, 900.0
    for _ in range(count):
        ts += rng.uniform(1, gap) if rng.random() > 0.01 else rng.uniform(200, 400)
        pip = max(0.0, pip + rng.gauss(0, 15))
        points.append((ts, pip + rng.gauss(0, 25)))
    return points


def test_the_o1_window_matches_brute_force_after_every_reading() -> None:
    points = random_pip(11, 1500)
    window = Window(120)
    for i, (ts, value) in enumerate(points):
        window.push(ts, value)
        values = in_window(ts, points[:i + 1], 120)
        assert [p[1] for p in window.points] == values
        assert window.stat("count") == len(values)
        assert window.stat("min") == min(values) and window.stat("max") == max(values)
        assert window.stat("avg") == pytest.approx(statistics.fmean(values), rel=1e-12)
        # Running sums lose a little to cancellation: compare variances (psi^2).
        assert window.stat("stddev") ** 2 == pytest.approx(statistics.pvariance(values),
                                                           abs=1e-6)
        assert window.full(ts) is (ts - points[0][0] >= 120)


@pytest.mark.parametrize(("stat", "seed"), [("avg", 1), ("min", 2), ("max", 3), ("stddev", 4),
                                            ("count", 5)])
def test_window_rule_fires_and_clears_where_a_recomputation_over_the_window_says(
        stat: str, seed: int) -> None:
    points = random_pip(seed, 500)
    seconds = 90.0

    def value(now: float, watched: list[Point]) -> float:
        return BRUTE[stat](in_window(now, watched, seconds))

    full = [value(ts, points[:i + 1]) for i, (ts, _) in enumerate(points)
            if ts - points[0][0] >= seconds]
    ordered = sorted(set(full))
    limit = (ordered[len(ordered) // 2] + ordered[len(ordered) // 2 + 1]) / 2  # never a tie
    expected = reference(points, lambda now, watched: None if now - watched[0][0] < seconds
                         else value(now, watched) > limit)
    assert len(expected) >= 4

    engine = engine_with(rule(type="window", metric="pip", stat=stat,
                              window_seconds=seconds, op=">", value=limit))
    assert feed(engine, "pip", points) == expected


def test_window_is_judged_only_once_a_whole_window_has_been_watched() -> None:
    # 7 readings at 10 s cover a 60 s window, both ends included.
    engine = engine_with(rule(type="window", metric="flow_rate", stat="count",
                              window_seconds=60, op=">=", value=3))
    out = [t for ts, v in series(*[1500.0] * 8)
           for t in engine.observe_reading("W-1", ts, {"flow_rate": v})]
    assert seen(out) == [("firing", 60)]
    assert out[0].value == 7


def test_window_avg_fires_on_the_reading_that_lifts_the_average() -> None:
    # vibration (mm/s) over 30 s: 4 readings per window once full.
    engine = engine_with(rule(type="window", metric="vibration", stat="avg",
                              window_seconds=30, op=">", value=7.1))
    values = (2.0, 2.0, 2.0, 2.0, 9.0, 9.0, 9.0, 9.0, 2.0, 2.0, 2.0)
    # avg at 50 s = (2+2+9+9)/4 = 5.5; 60 s: (2+9+9+9)/4 = 7.25; 90 s: (9+9+2+2)/4 = 5.5
    assert feed(engine, "vibration", series(*values)) == [("firing", 60), ("resolved", 90)]


def test_a_stuck_sensor_has_zero_stddev_so_a_flatline_rule_fires() -> None:
    engine = engine_with(rule(type="window", metric="discharge_pressure", stat="stddev",
                              window_seconds=300, op="==", value=0.0))
    assert feed(engine, "discharge_pressure", series(*[2173.7] * 40)) == [("firing", 300)]


# --- compare -------------------------------------------------------------------------------
def test_compare_two_metrics_of_one_device() -> None:
    engine = engine_with(no_head())
    steps: list[tuple[float, dict[str, float]]] = [
        (0, {"discharge_pressure": 2800.0}),           # no pip yet: holds
        (10, {"pip": 900.0}),                            # 2800 < 1200? no
        (20, {"discharge_pressure": 1150.0}),            # 1150 < 1200: fires
        (30, {"pip": 800.0}),                            # 1150 < 1100? no: resolved
        (40, {"pip": 950.0}),                            # 1150 < 1250: fires, on pip
        (50, {"discharge_pressure": 1300.0, "pip": 950.0}),  # resolved
    ]
    out: list[Transition] = []
    for ts, metrics in steps:
        out += engine.observe_reading("W-1", ts, metrics)
    assert seen(out) == [("firing", 20), ("resolved", 30), ("firing", 40), ("resolved", 50)]
    assert [t.value for t in out] == [1150.0, 1150.0, 1150.0, 1300.0]  # the left side


def twin(**fields: Any) -> Rule:
    """W-1's motor current above W-2's + 10 A."""
    return rule(**{"type": "compare", "metric": "motor_current", "op": ">",
                   "other_device_id": "W-2", "offset": 10.0, "scope": {"device_id": "W-1"},
                   "max_age_seconds": 60, **fields})


def test_compare_one_metric_of_two_devices_moves_with_either() -> None:
    engine = engine_with(twin())
    out: list[Transition] = []
    for device, ts, amps in [("W-2", 0, 45.0), ("W-1", 0, 48.0), ("W-1", 10, 58.0),
                             ("W-3", 15, 10.0), ("W-2", 20, 50.0), ("W-2", 30, 40.0)]:
        out += engine.observe_reading(device, ts, {"motor_current": amps})
    # 58 > 55 fires at 10; W-2 at 50 A makes it 58 > 60: resolved by W-2's reading at 20;
    # W-2 at 40 A: 58 > 50 fires again. W-3 feeds nothing.
    assert [(t.kind, t.at, t.alert.device_id) for t in out] == \
        [("firing", 10, "W-1"), ("resolved", 20, "W-1"), ("firing", 30, "W-1")]
    assert engine.observe_reading("W-2", 40, {"motor_current": 10.0}) == []  # still firing


def test_compare_holds_while_the_other_side_is_older_than_max_age() -> None:
    engine = engine_with(twin())
    out: list[Transition] = []
    for device, ts, amps in [
            ("W-2", 0, 45.0), ("W-1", 60, 60.0),     # 60 s apart: still fresh, fires
            ("W-1", 100, 40.0),                        # would clear; W-2 100 s old: holds
            ("W-2", 110, 45.0),                        # fresh again: 40 > 55? resolved
            ("W-1", 200, 90.0),                        # would fire; W-2 90 s old: holds
            ("W-2", 260, 45.0)]:                       # 60 s apart: fires
        out += engine.observe_reading(device, ts, {"motor_current": amps})
    assert seen(out) == [("firing", 60), ("resolved", 110), ("firing", 260)]


def test_a_reading_that_moves_both_compared_metrics_is_judged_on_the_new_pair() -> None:
    engine = engine_with(rule(type="compare", metric="pip", op=">",
                              other_metric="discharge_pressure", offset=-1000.0))
    assert engine.observe_reading("W-1", 0, {"pip": 900.0, "discharge_pressure": 2800.0}) == []
    assert seen(engine.observe_reading("W-1", 10, {"pip": 2000.0,
                                                   "discharge_pressure": 3100.0})) == []


# --- no_data -------------------------------------------------------------------------------
def test_no_data_for_a_metric_fires_on_the_timer_and_clears_with_its_next_reading() -> None:
    engine = engine_with(rule(type="no_data", name="flow meter", metric="flow_rate",
                              after_seconds=300))
    assert feed(engine, "flow_rate", series(1500.0, 1490.0)) == []
    assert ticks(engine, [100, 200, 309.9]) == []
    [fired] = engine.tick(310)
    assert (fired.kind, fired.at, fired.value, fired.message) == \
        ("firing", 310, 300.0, "flow meter on W-1: no flow_rate for 300 s")
    assert ticks(engine, [400, 500]) == []
    assert feed(engine, "pip", [(520, 900.0)]) == []  # another metric does not clear it
    [resolved] = engine.observe_reading("W-1", 530, {"flow_rate": 1480.0})
    assert (resolved.kind, resolved.at, resolved.value) == ("resolved", 530, 520.0)
    assert engine.tick(829) == [] and seen(engine.tick(830)) == [("firing", 830)]


def test_no_data_for_any_metric_is_kept_quiet_by_every_metric() -> None:
    engine = engine_with(rule(type="no_data", after_seconds=300))
    assert feed(engine, "flow_rate", [(0, 1500.0)]) == []
    assert feed(engine, "pip", [(200, 900.0)]) == []
    assert ticks(engine, [300, 499]) == []
    assert seen(engine.tick(500)) == [("firing", 500)]
    assert feed(engine, "vibration", [(510, 1.2)]) == [("resolved", 510)]


def test_an_older_reading_of_a_new_metric_does_not_end_the_silence() -> None:
    engine = engine_with(rule(type="no_data", after_seconds=300))
    assert feed(engine, "flow_rate", [(100, 1500.0)]) == []
    assert seen(engine.tick(400)) == [("firing", 400)]
    assert feed(engine, "pip", [(50, 900.0)]) == []  # a backlog from before the silence
    assert feed(engine, "pip", [(410, 910.0)]) == [("resolved", 410)]


def test_no_data_never_fires_for_a_device_never_heard_from() -> None:
    engine = engine_with(rule(type="no_data", after_seconds=300),
                         devices={"W-9": Device("esp")})
    assert feed(engine, "pip", [(0, 900.0)], device="W-1") == []
    out = engine.tick(10_000)
    assert [(t.kind, t.alert.device_id) for t in out] == [("firing", "W-1")]


# --- diagnosis -----------------------------------------------------------------------------
def test_diagnosis_rule_matches_its_code_at_or_above_min_severity() -> None:
    engine = engine_with(rule(type="diagnosis", code="gas_lock", min_severity="warning"))
    assert diagnose(engine, 0, "gas_lock", "info") == []
    [fired] = engine.observe_diagnosis("W-1", 10, "gas_lock", "pip", "warning", False, 0.8)
    assert (fired.kind, fired.at, fired.value) == ("firing", 10, 0.8)
    assert diagnose(engine, 15, "overheating", "critical") == []
    assert diagnose(engine, 20, "gas_lock", "critical", confidence=0.95) == []
    assert diagnose(engine, 30, "gas_lock", "warning", cleared=True) == [("resolved", 30)]
    assert diagnose(engine, 40, "gas_lock", "critical") == [("firing", 40)]
    assert diagnose(engine, 50, "gas_lock", "info") == [("resolved", 50)]  # fell below


def test_diagnosis_any_code_fires_while_any_is_active_and_resolves_with_the_last() -> None:
    engine = engine_with(rule(type="diagnosis", code="*", min_severity="warning"))
    assert diagnose(engine, 10, "gas_lock", confidence=0.9) == [("firing", 10)]
    assert diagnose(engine, 20, "overheating", "critical", metric="motor_temp",
                    confidence=0.7) == []
    assert engine.open[(1, "W-1")].value == 0.9  # the highest confidence of the active
    assert diagnose(engine, 30, "gas_lock", cleared=True) == []
    assert diagnose(engine, 35, "underload", "info", metric="motor_current") == []
    [resolved] = engine.observe_diagnosis("W-1", 40, "overheating", "motor_temp", "warning",
                                          True, 0.9)
    assert (resolved.kind, resolved.at) == ("resolved", 40)


def test_a_diagnosis_is_tracked_per_metric() -> None:
    engine = engine_with(rule(type="diagnosis", code="sensor_fault"))
    assert diagnose(engine, 10, "sensor_fault", metric="pip") == [("firing", 10)]
    assert diagnose(engine, 20, "sensor_fault", metric="motor_temp") == []
    assert diagnose(engine, 30, "sensor_fault", metric="pip", cleared=True) == []
    assert diagnose(engine, 40, "sensor_fault", metric="motor_temp", cleared=True) == \
        [("resolved", 40)]
