"""What the Sparkplug codec's tests share: Tahu JS as the independent codec, a fixed
timestamp, and the property tests' settings."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.utils.sparkplug_edge import TahuCodec

U64_MAX = (1 << 64) - 1
NOW = 1_700_000_000_123
# Property tests: no per-example deadline nor too-slow check, which a busy machine (two
# test workers, other suites) trips without anything being wrong.
PROPERTIES = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def f32(x: float) -> float:
    """`x` as a Float metric holds it (32 bits)."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


@pytest.fixture(scope="module")
def tahu() -> Iterator[TahuCodec]:
    with TahuCodec() as codec:
        yield codec
