"""The engine's timer while it works off a stream backlog: event time, not wall time, so
catching up on old readings neither finds devices silent nor fires a `for` early."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from services.alerts.metrics import AlertsMetrics
from services.alerts.watching import BACKLOG_SECONDS, Watcher
from shared.alerting.evaluation import Engine
from shared.health import Health
from shared.partition import Partition
from shared.streams import StreamMessage
from tests.utils.alert_engine import rule


def watcher() -> Watcher:
    return Watcher(Engine(), None, Partition(0, 1),  # type: ignore[arg-type]  # no I/O here
                   AlertsMetrics(CollectorRegistry()), Health(), retry_max_delay=1.0,
                   on_committed=lambda: None, batch=BATCH)


BATCH = 3


def batch(seconds_ago: float, size: int = 1) -> list[StreamMessage]:
    """`size` entries, the newest added to the stream `seconds_ago`."""
    return [StreamMessage(f"{int((time.time() - seconds_ago) * 1000)}-{n}", {})
            for n in range(size)]


def test_a_fresh_batch_keeps_wall_time() -> None:
    w = watcher()
    w._note_backlog(batch(0.5), int((time.time() - 3600) * 1000))  # late data, fresh entry
    assert abs(w.clock() - time.time()) < 1


def test_a_backlog_runs_the_timer_on_the_event_time_reached() -> None:
    w = watcher()
    hour_ago = round(time.time() - 3600)
    w._note_backlog(batch(600), int(hour_ago * 1000))
    assert w.clock() == hour_ago
    w._note_backlog(batch(590), int((hour_ago + 10) * 1000))
    assert w.clock() == hour_ago + 10
    w._note_backlog(batch(0), int(time.time() * 1000))  # caught up
    assert abs(w.clock() - time.time()) < 1


def test_a_full_batch_is_a_backlog_however_fresh() -> None:
    """A gateway uploading an hour it stored while offline: fresh entries, old readings."""
    w = watcher()
    hour_ago = round(time.time() - 3600)
    w._note_backlog(batch(0, BATCH), hour_ago * 1000)
    assert w.clock() == hour_ago
    w._note_backlog(batch(0, BATCH - 1), int(time.time() * 1000))
    assert abs(w.clock() - time.time()) < 1


def test_no_batch_for_a_while_means_caught_up() -> None:
    w = watcher()
    w._note_backlog(batch(600), int((time.time() - 3600) * 1000))
    w.last_batch -= BACKLOG_SECONDS + 1
    assert abs(w.clock() - time.time()) < 1


def test_silence_is_judged_by_the_data_while_catching_up() -> None:
    engine = Engine()
    engine.set_rules({1: rule(type="no_data", after_seconds=300)}, 0.0)
    w = watcher()
    w.engine = engine
    start = time.time() - 3600
    for n in range(10):  # a reading a minute, an hour ago, read as a backlog
        ts = start + 60 * n
        assert engine.observe_reading("W-1", ts, {"pip": 900.0}) == []
        w._note_backlog(batch(1800), int(ts * 1000))
        assert engine.tick(w.clock()) == [], "silent by wall time, not by the data"
    assert [t.kind for t in engine.tick(time.time())] == ["firing"]  # really silent now
