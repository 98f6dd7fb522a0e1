"""Numbered readings, and the check that storage holds each of them exactly once."""

from __future__ import annotations

import time

import orjson

from shared.mqtt import telemetry_topic

# Yesterday, whole seconds: readings must stay inside the telemetry's retention (a year on
# TimescaleDB, whose retention job would drop a fixed date's chunk once it aged out).
BASE_MS = (int(time.time()) - 86_400) * 1000


def readings(device_id: str, count: int) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs at distinct event times; metric `n` carries seq so each
    (device, seq) is checkable in storage."""
    topic = telemetry_topic(device_id)
    return [(topic, orjson.dumps({"ts": BASE_MS + seq, "seq": seq,
                                  "telemetry": {"n": seq, "flow_rate": 2500.0}}))
            for seq in range(count)]


def assert_exactly_once(seqs: list[int], count: int) -> None:
    assert len(seqs) == count, f"{len(seqs)} rows for {count} readings"
    assert sorted(seqs) == list(range(count))
