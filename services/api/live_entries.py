"""What a live client receives: stream entries as events (one JSON encoding shared by
every client), and the cursor that says where a client is in each stream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from shared.streams import ALERTS, DIAGNOSTICS, TELEMETRY, decode_diagnosis, decode_telemetry
from shared.timefmt import utc_text

# The feed's name of each stream: (Redis key, cursor letter, event name of its entries).
STREAMS: dict[str, tuple[str, str, str]] = {
    "telemetry": (TELEMETRY, "t", "telemetry"),
    "diagnostics": (DIAGNOSTICS, "d", "diagnosis"),
    "alerts": (ALERTS, "a", "alert"),
}
_BY_LETTER = {letter: name for name, (_, letter, _) in STREAMS.items()}
_ENTRY_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")

MAX_ID_PART = 2**64 - 1  # Redis refuses larger entry id parts
EntryId = tuple[int, int]  # (milliseconds, sequence): compares as Redis orders entries
# What a feed yields: (event name, cursor after it, the event's JSON).
Out = tuple[str, str, bytes]


def format_id(entry: EntryId) -> str:
    return f"{entry[0]}-{entry[1]}"


def encode_cursor(positions: dict[str, EntryId]) -> str:
    """`t=<id>;d=<id>;a=<id>`: the last entry a client has of each stream it follows."""
    return ";".join(f"{letter}={format_id(positions[name])}"
                    for name, (_, letter, _) in STREAMS.items() if name in positions)


def decode_cursor(text: str) -> dict[str, EntryId]:
    """Raises ValueError naming what is wrong."""
    positions: dict[str, EntryId] = {}
    for part in filter(None, text.strip().split(";")):
        letter, _, value = part.partition("=")
        name = _BY_LETTER.get(letter.strip())
        match = _ENTRY_ID.fullmatch(value.strip())
        if name is None or match is None or \
                max(int(match[1]), int(match[2] or 0)) > MAX_ID_PART:
            raise ValueError(f"bad cursor part {part[:40]!r}: expected t=, d= or a= and an "
                             f"entry id such as 1732500000000-0")
        positions[name] = (int(match[1]), int(match[2] or 0))
    return positions


@dataclass(frozen=True, slots=True)
class LiveEvent:
    stream: str
    id: EntryId
    device_id: str | None
    data: bytes  # the event's JSON, encoded once for every client


def _iso(ms: int) -> str:
    return utc_text(datetime.fromtimestamp(ms // 1000, UTC).replace(
        microsecond=ms % 1000 * 1000))


def decode_entry(stream: str, entry_id: EntryId, fields: dict[bytes, bytes]) -> LiveEvent:
    """Raises ValueError, KeyError or TypeError for an entry outside the contract."""
    if stream == "telemetry":
        reading = decode_telemetry(fields)
        return LiveEvent(stream, entry_id, reading.device_id, orjson.dumps({
            "device_id": reading.device_id, "ts": _iso(reading.ts_ms),
            "metrics": reading.metrics, "seq": reading.seq}))
    if stream == "diagnostics":
        decode_diagnosis(fields)  # validates; the JSON goes out as it came
        return LiveEvent(stream, entry_id, fields[b"device_id"].decode(), fields[b"diagnosis"])
    alert = orjson.loads(fields[b"alert"])
    if not isinstance(alert, dict):
        raise ValueError("alert is not a JSON object")
    device = alert.get("device_id")
    return LiveEvent(stream, entry_id, device if isinstance(device, str) else None,
                     fields[b"alert"])


def parse_id(text: str) -> EntryId:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
