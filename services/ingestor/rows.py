"""Map a batch of parsed messages to the rows of one transaction and its stream entries.

Pure: ids and each device's known units come in resolved, nothing is read or written
here, so it is unit-tested alone.

Units (DESIGN.md section 9): a number of a known metric is stored and streamed in the
metric's canonical unit. One that carries a unit is converted from it (the parser has
already rejected a unit that cannot express the metric, `bad_unit`), and that unit
becomes its device's unit for the metric; one without a unit is in the unit its device
last gave for the metric, or canonical if it never gave one. Conversions come from
`shared.units.conversion`, cached per (metric, unit), and each device's known unit is
kept with its conversion, so a value in the unit its device gave before costs one dict
lookup: no pint on this path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.ingestor.batch import Parsed, Reject
from services.ingestor.repository import KnownUnit, LatestRow, NumberRow, TextRow, UnitRow
from shared.streams import EncodedEntry, encode_telemetry
from shared.units import CANONICAL, Conversion, conversion

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


def metric_units(items: list[Parsed]) -> dict[str, str | None]:
    """Every metric in the batch with the first unit given for it (None if never given)."""
    units: dict[str, str | None] = {}
    for item in items:
        for reading in item.readings:
            for value in reading.values:
                if units.get(value.metric) is None:
                    units[value.metric] = value.unit
    return units


def first_kinds(items: list[Parsed]) -> dict[str, str]:
    """Every metric in the batch with the kind of its first value: 'number' or 'text'."""
    kinds: dict[str, str] = {}
    for item in items:
        for reading in item.readings:
            for value in reading.values:
                if value.metric not in kinds:
                    kinds[value.metric] = "text" if value.number is None else "number"
    return kinds


def bad_value(item: Parsed, kinds: Mapping[str, str | None],
              bounds: Mapping[str, tuple[float, float]],
              known: Mapping[str, KnownUnit] | None) -> tuple[str, str] | None:
    """Why `item` must not be stored: text for a metric the catalog knows as a number
    (`text_for_number`), or a number outside its metric's plausible range in the canonical
    unit (`implausible_value`); None when every value is acceptable."""
    for reading in item.readings:
        for v in reading.values:
            number = v.number
            if number is None:
                if kinds.get(v.metric) == "number":
                    assert v.text is not None
                    return "text_for_number", (f"{v.metric} is a numeric metric; got the "
                                               f"text {v.text[:40]!r}")
                continue
            bound = bounds.get(v.metric)
            if bound is None:
                continue
            if v.unit is not None:
                number = conversion(v.metric, v.unit)(number)
            elif known is not None and (got := known.get(v.metric)) is not None:
                number = got[1](number)
            if not bound[0] <= number <= bound[1]:
                unit = CANONICAL.get(v.metric, "")
                return "implausible_value", (
                    f"{v.metric} {number:.6g} {unit} is outside its plausible range "
                    f"[{bound[0]:g}, {bound[1]:g}] {unit}".replace("  ", " "))
    return None


def _learn(rows: BatchRows, units: Mapping[int, Mapping[str, KnownUnit]], device: int,
           name: str, metric: int, unit: str, conv: Conversion) -> dict[str, KnownUnit]:
    """`device` now gives `name` in `unit`: copy-on-write, `units` is never changed."""
    known = rows.units.get(device)
    if known is None:
        known = rows.units[device] = dict(units.get(device) or {})
    known[name] = (unit, conv)
    rows.unit_changes[(device, metric)] = unit
    return known


def map_batch(items: list[Parsed], devices: dict[str, int], metrics: dict[str, int],
              reject: Callable[[Parsed, str, str], Reject],
              units: Mapping[int, Mapping[str, KnownUnit]] | None = None,
              kinds: Mapping[str, str | None] | None = None,
              bounds: Mapping[str, tuple[float, float]] | None = None) -> BatchRows:
    """Rows for `items`; an item whose device has no id becomes `reject(item,
    "unknown_device", ...)`, one with a bad value (`bad_value`) a reject of its reason.
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
            device = devices[item.device_id]
            known = rows.units.get(device) or units.get(device)
            if (bad := bad_value(item, kinds, bounds, known)) is not None:
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
        known = rows.units.get(device) or units.get(device)  # None: never gave a unit
        for reading in item.readings:
            entry: dict[str, float | str] = {}
            for v in reading.values:
                metric = metrics[v.metric]
                number = v.number
                if number is not None:
                    unit = v.unit
                    if unit is not None:
                        if known is not None and (got := known.get(v.metric)) is not None \
                                and got[0] == unit:  # the unit it gave before: the usual case
                            number = number * got[1].scale + got[1].offset
                        elif v.metric in CANONICAL:
                            conv = conversion(v.metric, unit)
                            number = number * conv.scale + conv.offset
                            known = _learn(rows, units, device, v.metric, metric, unit, conv)
                    elif known is not None and (got := known.get(v.metric)) is not None:
                        number = number * got[1].scale + got[1].offset
                    rows.numbers.append((reading.ts, device, metric, number, v.quality))
                    entry[v.metric] = number
                else:
                    assert v.text is not None
                    rows.texts.append((reading.ts, device, metric, v.text, v.quality))
                    entry[v.metric] = v.text
                current = rows.latest.get((device, metric))
                if current is None or current[2] < reading.ts:
                    rows.latest[(device, metric)] = (device, metric, reading.ts,
                                                     number, v.text, v.quality)
            rows.stream.append(encode_telemetry(
                item.device_id, int(reading.ts.timestamp() * 1000), entry, reading.seq))
    for at, count in limited.values():
        if count > 1:  # a copy: a retried batch is mapped again from the same items
            rows.rejects[at] = dataclasses.replace(rows.rejects[at], count=count)
    return rows
