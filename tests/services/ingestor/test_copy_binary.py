"""The ingestor's binary COPY stream (services/ingestor/copy_binary.py) against PostgreSQL
itself: generated rows copied in read back equal, and equal to what asyncpg's own
encoder stores for the same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingestor import copy_binary, repository
from services.ingestor.repository import TELEMETRY_COLUMNS

times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.just(UTC))
ints = st.integers(1, 2**31 - 1)
metrics = st.integers(1, 2**15 - 1)
qualities = st.one_of(st.none(), st.integers(-2**15, 2**15 - 1))
floats = st.floats(allow_nan=False, allow_infinity=False)
number_rows = st.lists(st.tuples(times, ints, metrics, floats, qualities), max_size=40)
text_rows = st.lists(st.tuples(times, ints, metrics, st.text().filter(lambda t: "\x00" not in t),
                               qualities), max_size=40)


async def _round_trip(url: str, value_type: str, rows: list[tuple], data: bytes
                      ) -> tuple[list[tuple], list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        columns = ", ".join(TELEMETRY_COLUMNS)
        await conn.execute(f"CREATE TEMP TABLE ours (time timestamptz, device int, "
                           f"metric smallint, value {value_type}, quality smallint);"
                           "CREATE TEMP TABLE theirs (LIKE ours)")
        await conn.copy_to_table("ours", source=memoryview(data), columns=TELEMETRY_COLUMNS,
                                 format="binary")
        await conn.copy_records_to_table("theirs", records=rows, columns=TELEMETRY_COLUMNS)
        ours = [tuple(r) for r in await conn.fetch(f"SELECT {columns} FROM ours")]
        theirs = [tuple(r) for r in await conn.fetch(f"SELECT {columns} FROM theirs")]
        return ours, theirs
    finally:
        await conn.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=number_rows)
async def test_numbers_are_stored_as_sent(db_url: str, rows: list[tuple]) -> None:
    ours, theirs = await _round_trip(db_url, "double precision", rows,
                                     copy_binary.numbers(rows))
    assert ours == theirs == rows


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=text_rows)
async def test_texts_are_stored_as_sent(db_url: str, rows: list[tuple]) -> None:
    ours, theirs = await _round_trip(db_url, "text", rows, copy_binary.texts(rows))
    assert ours == theirs == rows


async def test_a_reading_s_values_share_one_converted_time(db_url: str) -> None:
    """Rows of one reading (the same timestamp object) and of the next, in order."""
    first = datetime(2026, 12, 7, 12, 0, 0, 250_000, tzinfo=UTC)
    second = first + timedelta(microseconds=1)
    rows = [(first, 1, 1, 1.5, None), (first, 1, 2, -2.0, 192), (second, 1, 1, 0.0, None)]
    ours, _ = await _round_trip(db_url, "double precision", rows, copy_binary.numbers(rows))
    assert ours == rows


async def test_a_stream_of_several_copy_messages_and_its_redelivery(db_url: str) -> None:
    """More than one COPY message (repository.COPY_CHUNK) goes in whole; copied again (a
    redelivered batch) it is refused, and through the redelivery path adds nothing."""
    start = datetime(2026, 12, 7, tzinfo=UTC)
    rows = [(start + timedelta(seconds=n), 1 + n % 7, 1 + n % 11, n / 3, None if n % 5 else 7)
            for n in range(40_000)]
    data = copy_binary.numbers(rows)
    assert len(data) > 1.5 * repository.COPY_CHUNK
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("CREATE TEMP TABLE t (time timestamptz, device int, "
                           "metric smallint, value double precision, quality smallint, "
                           "UNIQUE (device, metric, time))")
        async with conn.transaction():
            assert await repository._copy(conn, "t", rows, data, "double precision",
                                          redelivered=False) == len(rows)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await repository._copy(conn, "t", rows, data, "double precision",
                                       redelivered=False)
        async with conn.transaction():
            assert await repository._copy(conn, "t", rows, data, "double precision",
                                          redelivered=True) == 0
        stored = await conn.fetch(f"SELECT {', '.join(TELEMETRY_COLUMNS)} FROM t "
                                  "ORDER BY time")
        assert [tuple(r) for r in stored] == rows
    finally:
        await conn.close()
