"""The flood guard's token buckets (the suspension itself is tested end to end in
test_hostile_devices.py)."""

from __future__ import annotations

from services.ingestor.flood_guard import TokenBuckets


def test_a_burst_is_admitted_then_the_sustained_rate() -> None:
    buckets = TokenBuckets(rate=10, burst=5)
    assert [buckets.admit("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not buckets.admit("a", 0.05)  # half a token back
    assert buckets.admit("a", 0.1)  # one token back
    assert not buckets.admit("a", 0.1)
    # Another device has a bucket of its own.
    assert buckets.admit("b", 0.1)


def test_a_device_within_its_rate_is_never_refused() -> None:
    buckets = TokenBuckets(rate=10, burst=1)
    assert all(buckets.admit("a", n / 10) for n in range(1000))


def test_a_bucket_refills_up_to_the_burst_only() -> None:
    buckets = TokenBuckets(rate=10, burst=3)
    buckets.admit("a", 0.0)
    assert [buckets.admit("a", 3600.0) for _ in range(4)] == [True] * 3 + [False]


def test_full_buckets_are_forgotten_and_partial_ones_kept() -> None:
    buckets = TokenBuckets(rate=1, burst=2)
    buckets.admit("idle", 0.0)
    buckets.admit("busy", 9.5)
    buckets.admit("busy", 9.5)
    buckets.forget_full(10.0)
    assert buckets._buckets.keys() == {"busy"}
