"""The rule form's backtest: what the rule as it stands in the form would have raised over
stored history, by the API's backtest of an unsaved rule (`POST /rules/test`, its
validation, limits and time-out included), before anything is saved."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.api.deps import Resources
from services.api.routes.rules import BacktestOut, UnsavedBacktestIn, backtest_draft
from services.api.security.principal import Principal
from shared.alerting import store
from shared.alerting.rules import parse_rule
from shared.errors import ValidationFailed
from shared.mqtt import NAME_RE

# The API replays at most a week (routes/rules.py, MAX_BACKTEST): a month is not offered.
WINDOWS: dict[str, tuple[str, timedelta]] = {"24h": ("24 h", timedelta(days=1)),
                                            "7d": ("7 d", timedelta(days=7))}
FIRST = 20  # transitions listed


@dataclass(frozen=True)
class Transition:
    at: datetime
    device_id: str
    kind: str  # pending, firing, resolved
    severity: str
    value: float | None  # the alert's last value and message: on its last transition only
    message: str


@dataclass(frozen=True)
class DeviceCount:
    device_id: str
    alerts: int
    still_open: int  # firing at the end of the window
    first_fired: datetime


@dataclass(frozen=True)
class Preview:
    start: datetime
    end: datetime
    device: str | None
    alerts: int
    devices: list[DeviceCount]
    transitions: list[Transition]  # the first FIRST, by time
    more: int  # transitions not listed


async def preview(res: Resources, who: Principal, body: dict[str, Any], window: str,
                  device: str | None) -> Preview:
    """ValidationFailed naming `window`, `device`, or (as the API names it,
    `rule.<field>`) the rule's bad field."""
    if window not in WINDOWS:
        raise ValidationFailed("bad_range", f"window: one of {', '.join(WINDOWS)}",
                               field="window")
    if device:
        body = await _narrowed(res, who, body, device)
    end = datetime.now(UTC)
    found = await backtest_draft(UnsavedBacktestIn(rule=body, start=end - WINDOWS[window][1],
                                                   end=end), res, who)
    return summary(found, device)


async def _narrowed(res: Resources, who: Principal, body: dict[str, Any],
                    device: str) -> dict[str, Any]:
    """The rule scoped to `device` alone, if it is in the rule's scope. The engine judges
    each device by itself (its own conditions, windows and normal; a cross-device compare
    is scoped to one device already), so this device's alerts are the same as in a
    replay of the whole scope, which is not read."""
    try:
        rule = parse_rule(body)
    except ValidationFailed:
        return body  # the backtest refuses it, naming its field as the API does
    known = {}
    if NAME_RE.fullmatch(device) and who.sees(device):
        async with res.pool.acquire() as conn:
            known = await store.load_devices(conn, [device])
    if device not in known:
        raise ValidationFailed("invalid_device", f"device: no device {device}", field="device")
    if not rule.scope.matches(device, known[device].device_type, known[device].tags):
        raise ValidationFailed("invalid_device", f"device: {device} is not in the rule's "
                               "scope", field="device")
    return {**body, "scope": {"device_id": device}}


def summary(found: BacktestOut, device: str | None) -> Preview:
    transitions: list[Transition] = []
    counts: dict[str, list[Any]] = {}  # device: [alerts, still open, first fired]
    for alert in found.alerts:
        if alert.fired_at is None:  # the backtest lists fired alerts only
            continue
        steps = [(alert.active_since, "pending")] if alert.active_since < alert.fired_at \
            else []
        steps.append((alert.fired_at, "firing"))
        if alert.resolved_at is not None:
            steps.append((alert.resolved_at, "resolved"))
        for n, (at, kind) in enumerate(steps):
            last = n == len(steps) - 1
            transitions.append(Transition(at, alert.device_id, kind, alert.severity,
                                          alert.value if last else None,
                                          alert.message if last else ""))
        count = counts.setdefault(alert.device_id, [0, 0, alert.fired_at])
        count[0] += 1
        count[1] += alert.resolved_at is None
        count[2] = min(count[2], alert.fired_at)
    transitions.sort(key=lambda t: t.at)
    devices = sorted((DeviceCount(d, *c) for d, c in counts.items()),
                     key=lambda d: (-d.alerts, d.device_id))
    return Preview(found.start, found.end, device, sum(d.alerts for d in devices), devices,
                   transitions[:FIRST], max(0, len(transitions) - FIRST))


def window_labels() -> Mapping[str, str]:
    return {key: label for key, (label, _) in WINDOWS.items()}
