"""Readings from a file for `insa diagnose` (docs/diagnosis.md, "Files"): JSON lines in the MQTT
telemetry payload's forms plus `device_id`, or CSV with `device_id`, `ts` and one column
per metric in canonical units. A bad line is reported with its number and skipped."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import orjson

from shared.diagnosis.events import Reading
from shared.errors import ValidationFailed
from shared.readings import Limits
from shared.schemas import parse_reading_payload, parse_timestamp
from shared.units import UnitError, to_canonical

# A file is history: any age is fine, and "now" means nothing for it.
FILE_LIMITS = Limits(max_future_skew=timedelta(days=365 * 100),
                     max_past_age=timedelta(days=365 * 100))

OnError = Callable[[int, str], None]


class UnitMemory:
    """A value without a unit is in the unit its device last gave for that metric."""

    def __init__(self) -> None:
        self.units: dict[tuple[str, str], str] = {}

    def canonical(self, device_id: str, metric: str, value: float, unit: str | None) -> float:
        if unit is None:
            return to_canonical(metric, value, self.units.get((device_id, metric)))
        converted = to_canonical(metric, value, unit)  # an unknown unit is not remembered
        self.units[(device_id, metric)] = unit
        return converted


def read_file(path: Path, on_error: OnError,
              on_bytes: Callable[[int], None] = lambda _n: None) -> Iterator[Reading]:
    with path.open("rb") as raw:
        if path.suffix.lower() == ".csv":
            yield from _read_csv(raw, on_error, on_bytes)
        else:
            yield from _read_json_lines(raw, on_error, on_bytes)


def _read_json_lines(raw: IO[bytes], on_error: OnError,
                     on_bytes: Callable[[int], None]) -> Iterator[Reading]:
    units = UnitMemory()
    for number, line in enumerate(raw, start=1):
        on_bytes(len(line))
        if not line.strip():
            continue
        try:
            yield _json_reading(line, units)
        except (ValidationFailed, UnitError, ValueError) as exc:
            on_error(number, _describe(exc))


def _json_reading(line: bytes, units: UnitMemory) -> Reading:
    obj = orjson.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    device_id = obj.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise ValueError("device_id is missing")
    if "ts" not in obj and "timestamp" not in obj:
        raise ValueError("ts is missing")
    (reading,) = parse_reading_payload(line, device_id, datetime.now(UTC), FILE_LIMITS)
    values = {metric: units.canonical(device_id, metric, number, unit)
              for metric, number, unit in reading.numbers_in_units()}
    return Reading(device_id, reading.ts.timestamp(), values)


def _read_csv(raw: IO[bytes], on_error: OnError,
              on_bytes: Callable[[int], None]) -> Iterator[Reading]:
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    rows = csv.DictReader(text)
    if rows.fieldnames is None or not {"device_id", "ts"} <= set(rows.fieldnames):
        on_error(1, "a CSV file needs a header with device_id, ts and metric columns")
        return
    for row in rows:
        on_bytes(sum(len(v or "") + 1 for v in row.values()))
        try:
            yield _csv_reading(row)
        except (ValidationFailed, ValueError) as exc:
            on_error(rows.line_num, _describe(exc))


def _csv_reading(row: dict[str, str]) -> Reading:
    device_id = (row.get("device_id") or "").strip()
    if not device_id:
        raise ValueError("device_id is missing")
    ts = parse_timestamp((row.get("ts") or "").strip(), FILE_LIMITS)
    values = {}
    for metric, cell in row.items():
        if metric in ("device_id", "ts") or cell is None or not cell.strip():
            continue
        try:
            values[metric] = float(cell)
        except ValueError:
            raise ValueError(f"{metric}: {cell[:40]!r} is not a number") from None
    return Reading(device_id, ts.timestamp(), values)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationFailed):
        return f"{exc.reason}: {exc.message}"
    return str(exc)
