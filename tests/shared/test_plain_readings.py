"""The plain-reading path of shared/plain_readings.py (no pydantic) against the full parse: on
generated readings, usual and unusual, both give the same readings or the same reject."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import schemas
from shared.errors import ValidationFailed
from shared.readings import Limits

RECEIVED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_values_per_reading=6)

names = st.sampled_from(["pip", "motor_current", "a.b-c:d_1", "bad name", "ts", "seq", "é"])
numbers = st.one_of(st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(numbers, st.booleans(), st.text(max_size=5), st.none(),
                    st.just("with\x00nul"))
objects = st.fixed_dictionaries(
    {"value": scalars},
    optional={"unit": st.one_of(st.sampled_from(["psi", "bar", "x" * 33, "u\x00"]),
                                st.integers(0, 9)),
              "quality": st.one_of(st.integers(-1, 40000), st.floats(0, 2), st.none()),
              "ts": st.just("2026-12-07T11:00:00Z"), "other": st.just(1)})
values = st.dictionaries(
    names, st.one_of(scalars, objects, st.lists(st.integers(0, 9), max_size=1)), max_size=8)
times = st.one_of(
    st.none(), numbers, st.booleans(),
    st.datetimes(min_value=datetime(1969, 1, 1), max_value=datetime(2030, 1, 1),
                 timezones=st.sampled_from([UTC, None])).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-12-07T11:59:00Z", "2026-12-07T11:59:00.5+01:00",
                     "2026-12-07T11:59:00.1234567Z", "2026-12-07 11:59:00Z",
                     "2026-12-07T11:59:00+0100", "2026-12-07T11:59:60Z", "1733572740",
                     "2026-12-07T11:59:00+24:00", "2026-12-07"]),
    st.integers(0, 2 * 10**12).map(lambda ms: ms))


@st.composite
def readings(draw: st.DrawFn) -> Any:
    reading: dict[str, Any] = {}
    if draw(st.booleans()):
        reading["ts"] = draw(times)
    if draw(st.booleans()):
        reading["seq"] = draw(st.one_of(st.integers(-2, 10**12), st.floats(0, 3),
                                        st.booleans(), st.none()))
    extra: dict[str, Any] = draw(st.sampled_from([{}, {"timestamp": "2026-12-07T11:00:00Z"},
                                  {"device_id": "other"}, {"metadata": {}}, {"x": 1}]))
    if draw(st.booleans()):
        reading["telemetry"] = draw(st.one_of(values, st.none(), st.just([1])))
        reading.update(extra)
    else:
        reading.update(draw(values))
        reading.update(extra)
    return reading


def parsed(payload: bytes, plain: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        if not plain:
            m.setattr(schemas, "plain_reading", lambda *_a: None)
        try:
            return schemas.parse_reading_payload(payload, "well-1", RECEIVED, LIMITS)
        except ValidationFailed as exc:
            return exc.reason, exc.message, exc.field


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(reading=readings())
def test_the_plain_path_reads_as_the_full_parse_does(
        reading: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = orjson.dumps(reading)
    assert parsed(payload, True, monkeypatch) == parsed(payload, False, monkeypatch)


def test_the_plain_path_takes_the_usual_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """What devices mostly send never reaches pydantic (the point of the path)."""
    def refuse(*_a: Any) -> Any:
        raise AssertionError("the full parse ran")

    monkeypatch.setattr(schemas._reading, "validate_python", refuse)
    ts = RECEIVED - timedelta(seconds=1)
    for reading in ({"ts": ts.isoformat(), "seq": 7, "telemetry": {"pip": 812.5, "on": True}},
                    {"ts": int(ts.timestamp() * 1000), "pip": 812, "mode": "auto"},
                    {"telemetry": {"pip": {"value": 56, "unit": "bar", "quality": 192}}}):
        got = schemas.parse_reading_payload(orjson.dumps(reading), "well-1", RECEIVED, LIMITS)
        assert len(got) == 1 and got[0].count()


def test_a_value_of_no_kind_is_refused_as_the_full_parse_refuses_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An array or null value is refused without pydantic (a malformed message must not cost
    more than a valid one), in the full parse's words; with an object after it, which could
    hold a `ts` error the full parse would report instead, the full parse decides."""
    def refuse(*_a: Any) -> Any:
        raise AssertionError("the full parse ran")

    ts = (RECEIVED - timedelta(seconds=1)).isoformat()
    for reading, where in (({"ts": ts, "telemetry": {"pip": 1.5, "gor": [1]}}, "telemetry.gor"),
                           ({"ts": ts, "pip": 1.5, "gor": None}, "gor")):
        payload = orjson.dumps(reading)
        full = parsed(payload, False, monkeypatch)
        assert full == ("schema_violation", f"{where}: must be a number, bool, string or "
                        "{value, unit, quality} object", where)
        with monkeypatch.context() as m:
            m.setattr(schemas._reading, "validate_python", refuse)
            assert parsed(payload, True, monkeypatch) == full
    later_ts = orjson.dumps({"telemetry": {"gor": [1], "pip": {"value": 1, "ts": "noon"}}})
    assert parsed(later_ts, True, monkeypatch)[0] == "invalid_timestamp"
    assert parsed(later_ts, True, monkeypatch) == parsed(later_ts, False, monkeypatch)
