"""Diagnosis thresholds as data: defaults, overridden per device type and per device.

Absolute ranges are the industry's textbook ones (docs/diagnosis.md). The engine
judges a well against its own baseline first; an absolute limit counts only where the
well normally sits inside it (a hot deep well running at 104 °C every day is not
overheating). Ratios are against the well's baseline after the affinity laws have
scaled it to the present VSD frequency.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import orjson

# Every number the engine compares against. A JSON object of the same shape (any subset)
# overrides it: {"defaults": {...}, "device_types": {"<type>": {...}}, "devices": {"<id>": {...}}}.
DEFAULT_LIMITS: dict[str, Any] = {
    "ranges": {  # [low, high]; None = no bound
        "flow_rate": {"normal": [1000, 3000], "critical": [500, 3500]},
        "pip": {"normal": [800, 1200], "critical": [600, 1400]},
        "motor_current": {"normal": [40, 60], "critical": [30, 70]},
        "motor_temp": {"normal": [60, 90], "critical": [None, 100]},
        "vibration": {"normal": [None, 1.5], "critical": [None, 3.0]},
        # No fleet-wide band: a drive is judged by its equipment's vsd_min_hz/vsd_max_hz
        # and its own setpoints. An operator may set one per type or device here.
        "vsd_frequency": {"normal": [None, None], "critical": [None, None]},
        "gor": {"normal": [200, 800], "critical": [None, 1000]},
    },
    "operation": {
        "running_min_hz": 5.0,          # below this the drive is stopped
        "running_min_current_ratio": 0.15,  # without a frequency: current below this is stopped
        "warmup_readings": 20,          # readings that learn a baseline before judging
        "startup_readings": 8,          # after a start: inrush and drawdown are normal
        "startup_seconds": 120.0,
        "setpoint_step_hz": 1.5,        # a frequency change this large is an operator step
        "settle_readings": 6,           # readings after a step before re-learning the baseline
        # a winding reaches its temperature within a few thermal time constants (10-40 min)
        # of a start or a setpoint step: its falling alone is judged only after that
        "temp_settle_seconds": 7200.0,
        "step_seconds": 180.0,          # an operator's step reaches its setpoint within this
        "baseline_hours": 12.0,         # time constant of the learned baseline
        "confirm_readings": 3,          # of the last `confirm_window`, to raise
        "confirm_window": 5,
        "clear_readings": 5,            # consecutive readings without the condition, to clear
        "gap_seconds": 1800.0,          # silence this long: short-term windows start over
        "idle_evict_seconds": 86400.0,  # a device silent this long is forgotten
    },
    "rules": {
        # Extra current with at least this share of extra flow, or (no flow meter) with PIP
        # above this ratio of normal (extra current up to `current_per_pip` of PIP's extra
        # share), is hydraulic load, not torque.
        "overload": {"warning_ratio": 1.15, "critical_ratio": 1.30, "explained_by_flow": 0.6,
                     "explained_by_pip": 1.03, "current_per_pip": 0.6},
        # A generic symptom: confirmed over more readings, so a specific cause that shows
        # the same low current can be told first.
        "underload": {"warning_ratio": 0.80, "critical_ratio": 0.60,
                      "confirm_readings": 6, "confirm_window": 8},
        "overheating": {"warning_rise": 10.0, "critical_rise": 20.0},  # degC over baseline
        "bearing_wear": {"warning_ratio": 2.0, "critical_ratio": 3.5, "min_rise": 0.3},
        "gas_lock": {"flow_ratio": 0.6, "critical_flow_ratio": 0.3, "current_ratio": 0.9,
                     "erratic_cv": 0.06, "pip_not_below_ratio": 0.85, "gor_ratio": 1.5,
                     # without flow or head: how unloaded the motor must be, and PIP rising
                     # (or at least holding near normal, not drawn down)
                     "unloaded_ratio": 0.8, "critical_unloaded_ratio": 0.6,
                     "pip_rising_ratio": 1.03, "whp_falling_ratio": 0.9,
                     "pip_holding_ratio": 0.97},
        "pump_off": {"pip_ratio": 0.6, "critical_pip_ratio": 0.3, "flow_ratio": 0.85,
                     "current_ratio": 0.95, "collapsed_flow_ratio": 0.5,
                     "pip_ratio_with_collapsed_flow": 0.8, "critical_flow_ratio": 0.2},
        "broken_shaft": {"current_ratio": 0.7, "flow_ratio": 0.2, "head_ratio": 0.45,
                         "steady_cv": 0.05,
                         # sudden: from loaded (this share of normal current) to no-load
                         # with at most `drop_readings` readings in between
                         "loaded_before_ratio": 0.85, "drop_readings": 1,
                         # without flow or head: current down to no-load, PIP not falling
                         # and the wellhead pressure not rising
                         "no_load_ratio": 0.55, "pip_not_falling_ratio": 0.97,
                         "whp_not_rising_ratio": 1.02},
        "closed_valve": {"discharge_ratio": 1.12, "critical_discharge_ratio": 1.25,
                         "flow_ratio": 0.5, "critical_flow_ratio": 0.2,
                         "current_ratio": 0.97},
        # Hunting: median second difference of the frequency; own setpoint: how far from
        # where the well is normally run a frequency past the configured range (by more
        # than the margin) must be; own band: without a configured range, how far beyond
        # every setpoint the well has settled at.
        "vsd_out_of_range": {"unsteady_hz": 1.0, "own_setpoint_hz": 1.5, "margin_hz": 0.5,
                             "own_band_hz": 8.0},
        # spikes: this many in 20 readings, each this share away from its neighbours (the
        # swinging share for motor current and frequency, which gas and hunting swing);
        # drift: a metric this share from normal while those tied to it hold within
        # `tied_still_ratio` (sensors.py, TIED); a running motor's winding reading this
        # much below the intake's fluid (sensors.py, cooler_than_its_fluid)
        "sensor_fault": {"flatline_readings": 12, "spikes": 3, "spike_ratio": 0.3,
                         "swinging_spike_ratio": 1.0,
                         "drift_ratio": 0.15, "tied_still_ratio": 0.05,
                         "temp_margin_degc": 5.0,
                         "physical": {  # outside these a transmitter is broken, not the well
                             "flow_rate": [0, 100000], "pip": [0, 20000],
                             "discharge_pressure": [0, 30000], "wellhead_pressure": [0, 20000],
                             "motor_current": [0, 2000], "motor_voltage": [0, 10000],
                             "motor_temp": [-60, 400], "intake_temp": [-60, 400],
                             "vibration": [0, 100], "vsd_frequency": [0, 120],
                             "gor": [0, 100000], "power": [0, 5000]},
                         "rail_values": [9999, -9999, 99999, 65535, 32767, -32768]},
        "anomaly": {"raise_z": 6.0, "clear_z": 3.0},
    },
}


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys replacing its own, nested objects merged key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_shape(override: Any, default: Any, path: str) -> None:
    """Raise ValueError naming the first key of `override` that the defaults do not have,
    or whose value is not of the default's kind (a number, a [low, high] pair, a list)."""
    if isinstance(default, Mapping):
        if not isinstance(override, Mapping):
            raise ValueError(f"{path}: expected an object")
        for key, value in override.items():
            if key not in default:
                raise ValueError(f"{path}.{key}: unknown key (known: {', '.join(default)})")
            check_shape(value, default[key], f"{path}.{key}")
    elif isinstance(default, list):
        if not isinstance(override, list) or (len(default) == 2 and len(override) != 2):
            raise ValueError(f"{path}: expected a list like {default}")
        for item in override:
            if item is not None and (isinstance(item, bool) or
                                     not isinstance(item, int | float)):
                raise ValueError(f"{path}: {item!r} is not a number")
    elif isinstance(override, bool) or not isinstance(override, int | float):
        raise ValueError(f"{path}: {override!r} is not a number")


class LimitBook:
    """Resolves the limits of one device: defaults < its type's < its own."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        overrides = overrides or {}
        unknown = set(overrides) - {"defaults", "device_types", "devices"}
        if unknown:
            raise ValueError(f"limits: unknown top-level keys {sorted(unknown)} "
                             "(expected defaults, device_types, devices)")
        check_shape(overrides.get("defaults", {}), DEFAULT_LIMITS, "defaults")
        for scope in ("device_types", "devices"):
            for name, limits in overrides.get(scope, {}).items():
                check_shape(limits, DEFAULT_LIMITS, f"{scope}.{name}")
        self.defaults = merged(DEFAULT_LIMITS, overrides.get("defaults", {}))
        self.device_types: dict[str, Any] = dict(overrides.get("device_types", {}))
        self.devices: dict[str, Any] = dict(overrides.get("devices", {}))
        self._cache: dict[tuple[str, str | None], dict[str, Any]] = {}

    @classmethod
    def from_json(cls, data: bytes) -> LimitBook:
        return cls(orjson.loads(data))

    def for_device(self, device_id: str, device_type: str | None = None) -> dict[str, Any]:
        key = (device_id, device_type)
        limits = self._cache.get(key)
        if limits is None:
            limits = self.defaults
            if device_type in self.device_types:
                limits = merged(limits, self.device_types[device_type])
            if device_id in self.devices:
                limits = merged(limits, self.devices[device_id])
            self._cache[key] = limits
        return limits
