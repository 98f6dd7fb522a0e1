"""A short `insa bench soak` in the suite: the whole platform under load through one of
each reliability event (Redis, PostgreSQL and broker restarts, kill -9 of each
service), and no guarantee broken. The 30-minute run's figures are in
docs/benchmarks.md ("Soak")."""

from __future__ import annotations

import pytest

from devtools.bench.soak import SoakConfig, run
from devtools.bench.soak_checks import report


@pytest.mark.timeout(420)
def test_a_short_soak_breaks_no_guarantee() -> None:
    result = run(SoakConfig(minutes=2.0, wells=30, interval=0.5, faults=3,
                            event_every=(6.0, 9.0), outage=(2.0, 4.0)), progress=print)
    print(report(result))
    assert [e["event"] for e in result["events"]][:7] == [
        "redis", "postgres", "broker", "kill ingestor", "kill diagnostics", "kill alerts",
        "kill api"]
    assert result["problems"] == []
    data = result["data"]
    assert data["readings_acked"] > 5000 and data["alerts"] > 0
