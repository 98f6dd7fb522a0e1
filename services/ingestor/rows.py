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
from typing import Any

from services.ingestor.batch import Parsed, Reject
from services.ingestor.repository import (
    KnownUnit,
    LatestRow,
    NumberRow,
    Seen,
    StatusRow,
    TextRow,
    UnitRow,
)
from shared.sparkplug.topics import NAMESPACE
from shared.streams import EncodedEntry, encode_telemetry
from shared.units import CANONICAL, IDENTITY, conversion

SPARKPLUG_PREFIX = NAMESPACE + "/"
UNKNOWN_DEVICE = "device is not registered and auto-provisioning is off"
Bound = tuple[float, float]  # a metric's plausible range: low, high


@dataclass(slots=True)
class Flood:
    """A device's rate_limited rejects of a batch, merged into its first one."""

    at: int  # index of that first one in BatchRows.rejects
    count: int = 0


@dataclass(slots=True)
class DeviceLatest:
    """A device's newest row per metric in a batch, and the newest time among them."""

    newest: datetime
    rows: dict[int, LatestRow]  # by metric


@dataclass(slots=True)
class BatchRows:
    """A batch mapped to ids and rows, ready for one transaction."""

    numbers: list[NumberRow] = field(default_factory=list)
    texts: list[TextRow] = field(default_factory=list)
    latest: dict[int, DeviceLatest] = field(default_factory=dict)  # by device
    seen: dict[int, Seen] = field(default_factory=dict)  # devices that sent telemetry
    statuses: list[StatusRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    stream: list[EncodedEntry] = field(default_factory=list)
    # Devices whose units changed in this batch -> their whole new metric -> known unit
    # mapping (replaces the ingestor's cached one once committed), and the (device,
    # metric) -> unit rows to upsert.
    units: dict[int, dict[str, KnownUnit]] = field(default_factory=dict)
    unit_changes: dict[tuple[int, int], str] = field(default_factory=dict)

    def latest_rows(self) -> list[LatestRow]:
        return [row for device in self.latest.values() for row in device.rows.values()]

    def unit_rows(self) -> list[UnitRow]:
        return [UnitRow(device, metric, unit)
                for (device, metric), unit in self.unit_changes.items()]


def devices_named(items: list[Parsed]) -> set[str]:
    return {i.device_id for i in items if i.reject is None and i.device_id}


def catalog_firsts(items: list[Parsed]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Every metric in the batch with the first unit given for it (None if never given),
    and the kind of its first value ('number' or 'text'): what a new catalog entry gets."""
    units: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    for item in items:
        for reading in item.readings:
            if not reading.numbers.keys() <= kinds.keys():
                for name in reading.numbers:
                    kinds.setdefault(name, "number")
                    units.setdefault(name, None)
            for value in reading.values:
                if value.metric not in kinds:
                    kinds[value.metric] = "text" if value.number is None else "number"
                if units.get(value.metric) is None:
                    units[value.metric] = value.unit
    return units, kinds


def _text_for_number(metric: str, text: str) -> tuple[str, str]:
    return "text_for_number", f"{metric} is a numeric metric; got the text {text[:40]!r}"


def _implausible(metric: str, number: float, bound: Bound) -> tuple[str, str]:
    unit = CANONICAL.get(metric, "")
    low, high = bound
    return "implausible_value", (f"{metric} {number:.6g} {unit} is outside its plausible "
                                 f"range [{low:g}, {high:g}] {unit}".replace("  ", " "))


def _learn(rows: BatchRows, units: Mapping[int, Mapping[str, KnownUnit]], device: int,
           learned: Mapping[str, tuple[int, KnownUnit]]) -> None:
    """`device` now gives each metric of `learned` (name -> its id and the unit) in that
    unit: copy-on-write, `units` is never changed."""
    known = rows.units.get(device)
    if known is None:
        known = rows.units[device] = dict(units.get(device) or {})
    for name, (metric, got) in learned.items():
        known[name] = got
        rows.unit_changes[(device, metric)] = got.unit


def _add_readings(rows: BatchRows, item: Parsed, device: int, metrics: dict[str, int],
                  units: Mapping[int, Mapping[str, KnownUnit]],
                  kinds: Mapping[str, str | None],
                  bounds: Mapping[str, Bound]) -> tuple[str, str] | None:
    """Add an item's values to `rows` in one pass, converted to canonical units, or, at
    the first value that must not be stored (text for a numeric metric, a number past
    its plausible range), take back what it added and return why (reason, detail)."""
    assert item.device_id is not None
    added = (len(rows.numbers), len(rows.texts), len(rows.stream))
    known = rows.units.get(device) or units.get(device)  # None: never gave a unit
    learned: dict[str, tuple[int, KnownUnit]] = {}  # name -> (id, unit): once the item is kept
    fresh: dict[int, LatestRow] = {}  # metric -> its newest row: likewise
    add_number, add_text = rows.numbers.append, rows.texts.append
    several = len(item.readings) > 1  # then a reading may be older than one before it
    span: tuple[datetime, datetime] | None = None  # of the readings that are not backfill
    for reading in item.readings:
        ts, historical = reading.ts, reading.historical
        latest = {} if several or historical else fresh
        # Streamed as parsed unless a value is converted or the reading has other values.
        entry: dict[str, Any] = reading.numbers
        for name, plain in reading.numbers.items():  # most values: plain numbers
            metric = metrics[name]
            got = None if known is None else known.get(name)
            if got is not None and (conv := got.conversion) is not IDENTITY:
                plain = plain * conv.scale + conv.offset  # in the unit it gave before
                if entry is reading.numbers:
                    entry = dict(entry)
                entry[name] = plain
            bound = bounds.get(name)
            if bound is not None:
                low, high = bound
                if not low <= plain <= high:
                    return _take_back(rows, added, _implausible(name, plain, bound))
            add_number((ts, device, metric, plain, None))
            latest[metric] = (device, metric, ts, plain, None, None)
        if reading.values:
            if entry is reading.numbers:
                entry = dict(entry)
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
                    if unit is not None and (got is None or got.unit != unit):
                        got = KnownUnit(unit, conversion(name, unit))  # identity: another metric
                        learned[name] = (metric, got)
                        known = {**(known or {}), name: got}
                    if got is not None and (conv := got.conversion) is not IDENTITY:
                        number = number * conv.scale + conv.offset  # else as sent
                    bound = bounds.get(name)
                    if bound is not None:
                        low, high = bound
                        if not low <= number <= high:
                            return _take_back(rows, added, _implausible(name, number, bound))
                    add_number((ts, device, metric, number, v.quality))
                    entry[name] = number
                # setdefault: a metric twice at one time (Sparkplug allows it), the first wins
                latest.setdefault(metric, (device, metric, ts, number, v.text, v.quality))
        if historical:  # a backfill is stored only: not the latest, not news
            continue
        if several:
            _keep_newest(fresh, latest)
        span = (ts, ts) if span is None else (min(span[0], ts), max(span[1], ts))
        rows.stream.append(encode_telemetry(
            item.device_id, int(ts.timestamp() * 1000), entry, reading.seq))
    if learned:
        _learn(rows, units, device, learned)
    if span is not None:
        _add_latest(rows, device, fresh, *span)
    return None


def _keep_newest(into: dict[int, LatestRow], rows: Mapping[int, LatestRow]) -> None:
    """Each metric's row of `rows` into `into` unless `into` has a newer or equal one: a
    late reading never wins."""
    for metric, row in rows.items():
        current = into.get(metric)
        if current is None or current[2] < row[2]:
            into[metric] = row


def _add_latest(rows: BatchRows, device: int, fresh: dict[int, LatestRow], oldest: datetime,
                newest: datetime) -> None:
    """A kept item's newest rows (metric -> row), from readings between `oldest` and
    `newest`, into the batch's latest values."""
    ours = rows.latest.get(device)
    if ours is None:
        rows.latest[device] = DeviceLatest(newest, fresh)
    elif ours.newest < oldest:  # the usual case: newer than all the device sent before
        ours.rows.update(fresh)
        ours.newest = newest
    else:
        _keep_newest(ours.rows, fresh)
        ours.newest = max(ours.newest, newest)


def _take_back(rows: BatchRows, added: tuple[int, int, int], why: tuple[str, str]
               ) -> tuple[str, str]:
    """Drop what an item added (`added`: the lengths of rows.numbers, .texts and .stream
    before it) and return why."""
    numbers, texts, stream = added
    del rows.numbers[numbers:], rows.texts[texts:], rows.stream[stream:]
    return why


def status_source(item: Parsed) -> str:
    """Who said a status (device_connections.source): a Sparkplug birth or death, a
    gateway for its child (or its own Will for all of them), or the device itself (its
    status message, or its Last Will, which the broker publishes in its name)."""
    if item.delivery.topic.startswith(SPARKPLUG_PREFIX):
        return "sparkplug"
    return "gateway" if item.gateway is not None else "device"


def map_batch(items: list[Parsed], devices: dict[str, int], metrics: dict[str, int],
              reject: Callable[[Parsed, str, str], Reject],
              units: Mapping[int, Mapping[str, KnownUnit]] | None = None,
              kinds: Mapping[str, str | None] | None = None,
              bounds: Mapping[str, Bound] | None = None) -> BatchRows:
    """Rows for `items`; an item whose device has no id becomes `reject(item,
    "unknown_device", ...)`, one with a bad value (`_add_readings`) a reject of its reason.
    `units`: device id -> metric name -> the unit the device last gave (committed) and its
    conversion; `kinds`: metric -> 'number' or 'text'; `bounds`: plausible ranges."""
    rows = BatchRows()
    units, kinds, bounds = units or {}, kinds or {}, bounds or {}
    limited: dict[str | None, Flood] = {}  # by device
    for item in items:
        if item.reject is None and item.device_id not in devices:
            item.reject = reject(item, "unknown_device", UNKNOWN_DEVICE)
        if item.reject is None and item.readings:
            assert item.device_id is not None
            bad = _add_readings(rows, item, devices[item.device_id], metrics=metrics,
                                units=units, kinds=kinds, bounds=bounds)
            if bad is not None:
                item.reject = reject(item, *bad)
        if item.reject is not None:
            if item.reject.reason == "rate_limited":  # a flood: one record per device
                flood = limited.get(item.device_id)
                if flood is None:
                    flood = limited[item.device_id] = Flood(len(rows.rejects))
                flood.count += 1
                if flood.count > 1:
                    continue
            rows.rejects.append(item.reject)
            continue
        assert item.device_id is not None
        device = devices[item.device_id]
        seen = rows.seen.get(device)
        if seen is None:
            last_seen = item.received
        else:
            last_seen, _online = seen
        if item.status is not None:
            rows.statuses.append(StatusRow(device, item.status.online, item.status.ts,
                                           status_source(item)))
            if seen is not None:  # a later status outranks earlier telemetry
                rows.seen[device] = (last_seen, False)
            continue
        rows.seen[device] = (max(last_seen, item.received), True)
    for flood in limited.values():
        if flood.count > 1:  # a copy: a retried batch is mapped again from the same items
            rows.rejects[flood.at] = dataclasses.replace(rows.rejects[flood.at],
                                                         count=flood.count)
    return rows
