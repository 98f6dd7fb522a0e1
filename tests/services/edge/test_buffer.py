"""The store-and-forward buffer: committed readings survive a reopen, one per (device,
metric, ts), deleted only when acknowledged; when full the oldest go, counted."""

from __future__ import annotations

from pathlib import Path

from services.edge.buffer import Buffer
from services.edge.publisher import telemetry_payload
from services.edge.readings import ILLEGAL_ADDRESS, Reading, Reject

T0 = 1_796_639_400_000_000  # 2026-12-07T10:30:00Z in epoch microseconds


def readings(n: int, start: int = 0, device: str = "W-1") -> list[Reading]:
    return [Reading(device, "pip", T0 + k * 1_000_000, 800.0 + k, "psi")
            for k in range(start, start + n)]


async def test_readings_survive_a_reopen_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    buffer = await Buffer.open(path, max_readings=100)
    assert await buffer.add(readings(5)) == 5
    assert await buffer.add([Reading("W-2", "running", T0, True)]) == 1
    await buffer.close()

    buffer = await Buffer.open(path, max_readings=100)
    assert buffer.depth == 6
    rows = await buffer.oldest(10)
    assert [r.reading for r in rows] == [*readings(5), Reading("W-2", "running", T0, True)]
    await buffer.remove(r.id for r in rows[:4])  # the broker acknowledged these
    await buffer.close()

    buffer = await Buffer.open(path, max_readings=100)
    assert buffer.depth == 2
    assert [r.reading for r in await buffer.oldest(10)] == \
        [readings(5)[4], Reading("W-2", "running", T0, True)]
    await buffer.close()


async def test_the_same_sample_again_is_kept_once(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_readings=100)
    assert await buffer.add(readings(3)) == 3
    # An OPC UA subscription re-sends a node's current value after a reconnect.
    assert await buffer.add(readings(4)) == 1
    assert buffer.depth == 4
    await buffer.close()


async def test_when_full_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    dropped: list[int] = []
    buffer = await Buffer.open(path, max_readings=10, on_dropped=dropped.append)
    await buffer.add(readings(8))
    await buffer.add(readings(5, start=8))
    assert (buffer.depth, buffer.dropped, dropped) == (10, 3, [3])
    assert [r.reading for r in await buffer.oldest(100)] == readings(10, start=3)
    await buffer.close()
    buffer = await Buffer.open(path, max_readings=10)
    assert (buffer.depth, buffer.dropped) == (10, 3)  # the count outlives a restart
    await buffer.close()


async def test_rejects_are_kept_with_their_reason_until_cleared(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_readings=10)
    reject = Reject("rtu-1", "holding_registers 20 of unit 1", "W-1", "pip",
                    ILLEGAL_ADDRESS, "Modbus exception 2 (illegal data address)")
    await buffer.record_reject(reject)
    await buffer.record_reject(reject)
    [row] = await buffer.rejects()
    assert (row["device"], row["reason"], row["attempts"]) == ("W-1", ILLEGAL_ADDRESS, 2)
    await buffer.keep_rejects_of({("W-1", "pip")})
    assert len(await buffer.rejects()) == 1
    await buffer.keep_rejects_of(set())  # no longer in the mapping file
    assert await buffer.rejects() == []
    await buffer.close()


async def test_a_message_groups_readings_by_device_then_time(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.sqlite3", max_readings=100)
    await buffer.add([Reading("W-1", "pip", T0, 850.5, "psi"),
                      Reading("W-1", "motor_current", T0, 41, None),
                      Reading("W-2", "running", T0 + 250_000, True),
                      Reading("W-1", "pip", T0 + 1_000_000, 851.0, "psi")])
    payload = telemetry_payload(await buffer.oldest(10))
    assert payload == (
        b'{"W-1":[{"ts":"2026-12-07T10:30:00Z","telemetry":{"pip":{"value":850.5,'
        b'"unit":"psi"},"motor_current":41}},{"ts":"2026-12-07T10:30:01Z","telemetry":'
        b'{"pip":{"value":851.0,"unit":"psi"}}}],"W-2":[{"ts":'
        b'"2026-12-07T10:30:00.250000Z","telemetry":{"running":true}}]}')
    await buffer.close()
