"""Flow control: intake pauses at the receive window and resumes at half of it."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from services.ingestor.flow_control import FlowControl
from services.ingestor.metrics import IngestorMetrics
from shared.mqtt_connection import Message


class RecordingIntake:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def ack_all(self, messages: Iterable[Message]) -> int:
        return 0

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def flow(window: int) -> tuple[FlowControl, RecordingIntake]:
    intake = RecordingIntake()
    return FlowControl(window, intake, IngestorMetrics(CollectorRegistry())), intake


def test_pauses_at_the_window_and_resumes_at_half() -> None:
    control, intake = flow(10)
    for _ in range(9):
        control.received()
    assert intake.calls == []
    control.received()
    assert intake.calls == ["pause"]
    control.settled(4)  # 6 held: still over half
    assert intake.calls == ["pause"]
    control.settled(1)
    assert intake.calls == ["pause", "resume"]
    assert (control.pending, control.high_water) == (5, 10)


def test_draining_pauses_for_good() -> None:
    control, intake = flow(10)
    control.received()
    control.drain()
    control.settled(1)
    assert intake.calls == ["pause"] and control.pending == 0
