"""Map a batch of parsed messages to the rows of one transaction and its stream entries.

Pure: ids and each device's known units come in resolved, nothing is read or written
here, so it is unit-tested alone.

Units (docs/payloads.md): a number of a known metric is stored and streamed in the
metric's canonical unit. One that carries a unit is converted from it (the parser has
already rejected a unit that cannot express the metric, `bad_unit`), and that unit
becomes its device's unit for the metric; one without a unit is in the unit its device
last gave for the metric, or canonical if it never gave one. A number of any other
metric is stored as sent, and a unit it carries likewise becomes its device's unit for
the metric (the conversion is the identity), which the CSV export labels it with.
Conversions come from `shared.units.conversion`, cached per (metric, unit), and each
device's known unit is kept with its conversion, so a value in the unit its device gave
before costs one dict lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.ingestor.batch import Parsed, Reject
from services.ingestor.repository import KnownUnit, LatestRow, NumberRow, TextRow, UnitRow
from shared.streams import EncodedEntry, encode_telemetry
from shared.units import CANONICAL, IDENTITY, Conversion, conversion

UNKNOWN_DEVICE = "device is not registered and auto-provisioning is off"


@dataclass(slots=True)
class BatchRows:
    """A batch mapped to ids and rows, ready for one transaction."""

    numbers: list[NumberRow] = field(default_factory=list)
    texts: list[TextRow] = field(default_factory=list)
    latest: dict[tuple[int, int], LatestRow] = field(default_factory=dict)
    # device -> (latest receive time, whether telemetry came after any status in the batch)
    seen: dict[int, tuple[datetime, bool]] = field(default_factory=dict)
    statuses: list[tuple[int, bool, datetime]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    stream: list[EncodedEntry] = field(default_factory=list)
    # Devices whose units changed in this batch -> their whole new metric -> (unit,
    # conversion) mapping (replaces the ingestor's cached one once committed), and the
    # (device, metric) -> unit rows to upsert.
    units: dict[int, dict[str, KnownUnit]] = field(default_factory=dict)
    unit_changes: dict[tuple[int, int], str] = field(default_factory=dict)

    def unit_rows(self) -> list[UnitRow]:
        return [(device, metric, unit) for (device, metric), unit in self.unit_changes.items()]


def devices_named(items: list[Parsed]) -> set[str]:
    return {i.device_id for i in items if i.reject is None and i.device_id}


def catalog_firsts(items: list[Parsed]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Every metric in the batch with the first unit given for it (None if never given),
    and the kind of its first value ('number' or 'text'): what a new catalog entry gets."""
    units: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    for item in items:
        for reading in item.readings:
            for value in reading.values:
                if value.metric not in kinds:
                    kinds[value.metric] = "text" if value.number is None else "number"
                if units.get(value.metric) is None:
                    units[value.metric] = value.unit
    return units, kinds


def _text_for_number(metric: str, text: str) -> tuple[str, str]:
    return "text_for_number", f"{metric} is a numeric metric; got the text {text[:40]!r}"


def _implausible(metric: str, number: float, bound: tuple[float, float]) -> tuple[str, str]:
    unit = CANONICAL.get(metric, "")
    return "implausible_value", (f"{metric} {number:.6g} {unit} is outside its plausible "
                                 f"range [{bound[0]:g}, {bound[1]:g}] {unit}".replace("  ", " "))


def _learn(rows: BatchRows, units: Mapping[int, Mapping[str, KnownUnit]], device: int,
           name: str, metric: int, unit: str, conv: Conversion) -> dict[str, KnownUnit]:
    """`device` now gives `name` in `unit`: copy-on-write, `units` is never changed."""
    known = rows.units.get(device)
    if known is None:
        known = rows.units[device] = dict(units.get(device) or {})
    known[name] = (unit, conv)
    rows.unit_changes[(device, metric)] = unit
    return known


def _add_readings(rows: BatchRows, item: Parsed, device: int, metrics: dict[str, int],
                  units: Mapping[int, Mapping[str, KnownUnit]],
                  kinds: Mapping[str, str | None],
                  bounds: Mapping[str, tuple[float, float]]) -> tuple[str, str] | None:
    """Add an item's values to `rows` in one pass, converted to canonical units, or, at
    the first value that must not be stored (text for a numeric metric, a number past
    its plausible range), take back what it added and return why (reason, detail)."""
    assert item.device_id is not None
    added = (len(rows.numbers), len(rows.texts), len(rows.stream))
    known = rows.units.get(device) or units.get(device)  # None: never gave a unit
    learned: dict[str, tuple[int, str, Conversion]] = {}  # applied once the item is kept
    fresh: list[LatestRow] = []  # likewise
    add_number, add_text, add_fresh = rows.numbers.append, rows.texts.append, fresh.append
    for reading in item.readings:
        ts = reading.ts
        entry: dict[str, float | str] = {}
        for v in reading.values:
            name, number, unit = v.metric, v.number, v.unit
            metric = metrics[name]
            if number is None:
                text = v.text
                assert text is not None  # a value is a number or a text
                if kinds.get(name) == "number":
                    return _take_back(rows, added, _text_for_number(name, text))
                add_text((ts, device, metric, text, v.quality))
                entry[name] = text
            else:
                got = None if known is None else known.get(name)
                # A unit it had not given before, kept for every metric: one stored as
                # sent is labelled with its own device's unit, not the catalog's first.
                if unit is not None and (got is None or got[0] != unit):
                    got = (unit, conversion(name, unit))  # identity for another metric
                    learned[name] = (metric, unit, got[1])
                    known = {**(known or {}), name: got}
                if got is not None and got[1] is not IDENTITY:  # identity: as sent
                    number = number * got[1].scale + got[1].offset
                bound = bounds.get(name)
                if bound is not None and not bound[0] <= number <= bound[1]:
                    return _take_back(rows, added, _implausible(name, number, bound))
                add_number((ts, device, metric, number, v.quality))
                entry[name] = number
            add_fresh((device, metric, ts, number, v.text, v.quality))
        rows.stream.append(encode_telemetry(
            item.device_id, int(ts.timestamp() * 1000), entry, reading.seq))
    for name, (metric, unit, conv) in learned.items():
        _learn(rows, units, device, name, metric, unit, conv)
    for row in fresh:
        current = rows.latest.get((row[0], row[1]))
        if current is None or current[2] < row[2]:
            rows.latest[(row[0], row[1])] = row
    return None


def _take_back(rows: BatchRows, added: tuple[int, int, int], why: tuple[str, str]
               ) -> tuple[str, str]:
    del rows.numbers[added[0]:], rows.texts[added[1]:], rows.stream[added[2]:]
    return why


def map_batch(items: list[Parsed], devices: dict[str, int], metrics: dict[str, int],
              reject: Callable[[Parsed, str, str], Reject],
              units: Mapping[int, Mapping[str, KnownUnit]] | None = None,
              kinds: Mapping[str, str | None] | None = None,
              bounds: Mapping[str, tuple[float, float]] | None = None) -> BatchRows:
    """Rows for `items`; an item whose device has no id becomes `reject(item,
    "unknown_device", ...)`, one with a bad value (`_add_readings`) a reject of its reason.
    `units`: device id -> metric name -> the unit the device last gave (committed) and its
    conversion; `kinds`: metric -> 'number' or 'text'; `bounds`: plausible ranges."""
    rows = BatchRows()
    units, kinds, bounds = units or {}, kinds or {}, bounds or {}
    limited: dict[str | None, list[int]] = {}  # device -> [index in rejects, count]
    for item in items:
        if item.reject is None and item.device_id not in devices:
            item.reject = reject(item, "unknown_device", UNKNOWN_DEVICE)
        if item.reject is None and item.readings:
            assert item.device_id is not None
            bad = _add_readings(rows, item, devices[item.device_id], metrics, units, kinds,
                                bounds)
            if bad is not None:
                item.reject = reject(item, *bad)
        if item.reject is not None:
            if item.reject.reason == "rate_limited":  # a flood: one record per device
                merged = limited.setdefault(item.device_id, [len(rows.rejects), 0])
                merged[1] += 1
                if merged[1] > 1:
                    continue
            rows.rejects.append(item.reject)
            continue
        assert item.device_id is not None
        device = devices[item.device_id]
        last_seen = rows.seen.get(device, (item.received, False))[0]
        if item.status is not None:
            rows.statuses.append((device, item.status.online, item.status.ts))
            if device in rows.seen:  # a later status outranks earlier telemetry
                rows.seen[device] = (last_seen, False)
            continue
        rows.seen[device] = (max(last_seen, item.received), True)
    for at, count in limited.values():
        if count > 1:  # a copy: a retried batch is mapped again from the same items
            rows.rejects[at] = dataclasses.replace(rows.rejects[at], count=count)
    return rows
