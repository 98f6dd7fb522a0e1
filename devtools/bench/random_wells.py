"""Randomized wells for judging the diagnosis engine on data it was not built on
(`insa bench diagnose-eval --fleet random`).

A model of its own, simpler than the simulator's and drawn far wider: sizes, operating
points (a third of the healthy wells at unusual ones: low frequency, low current, low
intake pressure with much gas, low flow), sampling every 1 to 60 s, other units, noise
and resolution, slow drift, operators' setpoint steps, stops and restarts, gaps, spikes,
missing sensors; faults with random onset, speed and severity. Physics is first order:
the annulus fills and is drawn down towards inflow = PI·(Pr - PIP); the pump follows the
affinity laws; current is magnetising plus torque; the winding heats with I² and cools
with flow. Writes the `insa diagnose` JSON-lines format, a labels file like
`insa simulate-file`'s, and an attributes file for the wells whose equipment is known.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shared.diagnosis.catalog import FAULT_CODES
from shared.units import conversion

START = datetime(2026, 3, 1, tzinfo=UTC)
FAULTS = FAULT_CODES  # every named failure, in the catalog's order (the seeds depend on it)
# Sensors each fault cannot be seen without; every well has current and frequency.
NEEDS = {"pump_off": ("pip",), "overheating": ("motor_temp",), "bearing_wear": ("vibration",),
         "closed_valve": ("wellhead_pressure",), "gas_lock": ("pip",)}
OPTIONAL = {"pip": 0.85, "motor_temp": 0.9, "flow_rate": 0.55, "discharge_pressure": 0.45,
            "wellhead_pressure": 0.7, "vibration": 0.6, "intake_temp": 0.7, "gor": 0.3,
            "power": 0.5, "motor_voltage": 0.6}
OTHER_UNITS = {"flow_rate": "m3/d", "pip": "kPa", "discharge_pressure": "bar",
               "wellhead_pressure": "kPa", "motor_temp": "degF", "intake_temp": "degF",
               "vibration": "in/s", "gor": "m3/m3", "power": "hp"}
UNUSUAL = ("low_hz", "low_current", "gassy_low_pip", "low_flow")
RAILS = (9999.0, -9999.0, 65535.0, 0.0, -50.0)


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


@dataclass
class Well:
    device_id: str
    interval: float
    hz: float
    current: float           # A at hz
    magnetising: float       # share of the running current that is not torque
    flow: float              # bbl/d at hz
    pip: float               # psi at hz
    reservoir: float         # psi
    head: float              # psi at hz
    whp: float
    intake_temp: float
    temp_rise: float         # degC over intake at the operating point
    vibration: float         # mm/s
    gor: float
    voltage: float
    power: float             # kW at the operating point
    annulus_tau: float       # s for the intake pressure to settle
    thermal_tau: float       # s for the winding
    noise: dict[str, float]  # relative (absolute for temperatures and frequency)
    decimals: int
    sensors: tuple[str, ...]
    units: dict[str, str]
    equipment: dict[str, float]
    unusual: str | None = None
    gas_ragged: float = 0.0  # a gassy healthy well's current is a little ragged


def draw_well(rng: random.Random, device_id: str, unusual: str | None,
              fault: str | None) -> Well:
    interval = float(round(_log_uniform(rng, 1, 60)))
    hz = rng.uniform(38, 44) if unusual == "low_hz" else rng.uniform(47, 63)
    rated = rng.uniform(20, 110)
    current = rated * (rng.uniform(0.35, 0.5) if unusual == "low_current"
                       else rng.uniform(0.6, 0.95))
    flow = rng.uniform(80, 300) if unusual == "low_flow" else _log_uniform(rng, 400, 4500)
    pip = rng.uniform(150, 350) if unusual == "gassy_low_pip" else rng.uniform(300, 1800)
    gor = rng.uniform(900, 2000) if unusual == "gassy_low_pip" else rng.uniform(100, 900)
    needed = NEEDS.get(fault or "", ())
    sensors = ["motor_current", "vsd_frequency"] + [
        m for m, p in OPTIONAL.items() if m in needed or rng.random() < p]
    if fault == "sensor_fault" and len(sensors) < 4:
        sensors += ["pip", "motor_temp"]
    units = {m: OTHER_UNITS[m] for m in sensors
             if m in OTHER_UNITS and rng.random() < 0.25} if rng.random() < 0.5 else {}
    low_hz, high_hz = rng.uniform(30, min(hz - 4, 45)), rng.uniform(max(hz + 4, 60), 70)
    equipment = {"motor_rated_current": round(rated, 1), "vsd_min_hz": round(low_hz, 1),
                 "vsd_max_hz": round(high_hz, 1)} if rng.random() < 0.5 else {}
    voltage = rng.uniform(400, 3500)
    return Well(
        device_id, interval, hz, current, rng.uniform(0.25, 0.45), flow, pip,
        reservoir=pip + rng.uniform(300, 2000), head=rng.uniform(1200, 4000),
        whp=rng.uniform(80, 400), intake_temp=rng.uniform(50, 130),
        temp_rise=rng.uniform(8, 35), vibration=rng.uniform(0.3, 2.5), gor=gor,
        voltage=voltage, power=1.732 * voltage * current * rng.uniform(0.75, 0.9) / 1000,
        annulus_tau=rng.uniform(600, 7200), thermal_tau=rng.uniform(600, 2400),
        noise={"flow_rate": rng.uniform(0.003, 0.03), "pip": rng.uniform(0.001, 0.01),
               "discharge_pressure": rng.uniform(0.001, 0.01),
               "wellhead_pressure": rng.uniform(0.002, 0.02),
               "motor_current": rng.uniform(0.003, 0.02), "motor_voltage": 0.005,
               "motor_temp": rng.uniform(0.05, 0.6), "intake_temp": rng.uniform(0.05, 0.4),
               "vibration": rng.uniform(0.02, 0.1), "vsd_frequency": rng.uniform(0.0, 0.05),
               "gor": rng.uniform(0.01, 0.05), "power": rng.uniform(0.005, 0.02)},
        decimals=rng.choice((0, 1, 1, 2, 2)), sensors=tuple(sensors), units=units,
        equipment=equipment, unusual=unusual,
        gas_ragged=rng.uniform(0.01, 0.03) if unusual == "gassy_low_pip" else 0.0)


@dataclass
class Fault:
    code: str
    onset: float
    ramp: float
    p: dict[str, Any]

    def progress(self, t: float) -> float:
        if t < self.onset:
            return 0.0
        return 1.0 if self.ramp <= 0 else min(1.0, (t - self.onset) / self.ramp)


def draw_fault(rng: random.Random, code: str, well: Well, duration: float) -> Fault:
    onset = rng.uniform(0.3, 0.6) * duration
    ramp = min(well.interval * _log_uniform(rng, 1, 300), 0.25 * duration)
    p: dict[str, Any] = {}
    if code == "broken_shaft":
        ramp, p["torque"] = 0.0, rng.uniform(0.03, 0.12)
    elif code == "overload":
        p["torque"] = rng.uniform(1.3, 1.8)
    elif code == "underload":  # worn impellers: over tens of readings at least
        p["wear"] = rng.uniform(0.7, 0.85)
        ramp = max(ramp, 20 * well.interval)
    elif code == "pump_off":
        p["pi"] = rng.uniform(0.15, 0.4)
        p["floor"] = rng.uniform(20, 80)
    elif code == "gas_lock":
        p["gas"], p["ragged"] = rng.uniform(0.55, 0.9), rng.uniform(0.05, 0.15)
    elif code == "closed_valve":
        p["opening"] = rng.uniform(0.02, 0.3)
    elif code == "overheating":
        p["rise"] = rng.uniform(18, 50)
    elif code == "bearing_wear":
        p["vibration"] = rng.uniform(2.5, 7)
    elif code == "vsd_out_of_range":
        p["mode"] = rng.choice(("drift", "jump", "hunting"))
        low, high = well.equipment.get("vsd_min_hz", 40.0), well.equipment.get("vsd_max_hz",
                                                                              68.0)
        p["target"] = high + rng.uniform(3, 8) if rng.random() < 0.5 else low - rng.uniform(3, 8)
        p["swing"] = rng.uniform(2.5, 5)
        if p["mode"] == "jump":
            ramp = 0.0
    elif code == "sensor_fault":
        p["metric"] = rng.choice([m for m in well.sensors if m != "vsd_frequency"])
        p["mode"] = rng.choice(("stuck", "rail", "spikes", "drift"))
        p["rail"], p["drift"] = rng.choice(RAILS), rng.choice((-1, 1)) * rng.uniform(0.3, 0.6)
        if p["mode"] != "drift":
            ramp = 0.0
    return Fault(code, onset, ramp, p)


def developed(fault: Fault, well: Well) -> float:
    """When the signature is all there: a pumped-off annulus is drawn down with its own
    time constant after the inflow has fallen."""
    lag = 2 * well.annulus_tau if fault.code == "pump_off" else 0.0
    return fault.onset + fault.ramp + lag


def operations(rng: random.Random, well: Well, duration: float, quiet_from: float
               ) -> tuple[list[tuple[float, float]], list[tuple[float, float]],
                          list[tuple[float, float]]]:
    """Setpoint steps (t, hz), stops (from, to) and gaps (from, to), none within a
    margin of a fault's onset (`quiet_from`)."""
    margin = 60 * well.interval

    def when(length: float = 0.0) -> float | None:
        for _ in range(20):
            t = rng.uniform(0.05 * duration, 0.95 * duration - length)
            if t + length + margin < quiet_from or t > quiet_from + 0.4 * duration:
                return t
        return None

    low = well.equipment.get("vsd_min_hz", 35.0) + 1
    high = well.equipment.get("vsd_max_hz", 66.0) - 1
    steps = []
    for _ in range(rng.choice((0, 0, 1, 2))):
        t = when()
        if t is not None:
            hz = well.hz + rng.choice((-1, 1)) * rng.uniform(2, 6)
            steps.append((t, min(high, max(low, hz))))
    stops, gaps = [], []
    # Stops and gaps last a share of the run (a few minutes when it is sampled every
    # second, hours when every minute), so no well is all stop or all gap.
    for _ in range(rng.choice((0, 0, 1))):
        length = rng.uniform(0.03, 0.15) * duration
        t = when(length)
        if t is not None:
            stops.append((t, t + length))
    for _ in range(rng.choice((0, 1, 2))):
        length = rng.uniform(0.005, 0.05) * duration
        t = when(length)
        if t is not None:
            gaps.append((t, t + length))
    return sorted(steps), stops, gaps


class WellRun:
    """One well through time: `step(t)` gives the readings' true values (canonical)."""

    def __init__(self, well: Well, fault: Fault | None, steps: list[tuple[float, float]],
                 stops: list[tuple[float, float]], rng: random.Random) -> None:
        self.w, self.fault, self.steps, self.stops, self.rng = well, fault, steps, stops, rng
        self.pip, self.temp = well.pip, well.intake_temp + well.temp_rise
        self.started = -1e9
        self.last_t = 0.0
        self.pi = well.flow / (well.reservoir - well.pip)
        self.was_running = True

    def setpoint(self, t: float) -> float:
        hz = self.w.hz
        for at, step in self.steps:
            if t >= at:
                hz = step
        return hz

    def step(self, t: float) -> dict[str, float]:
        w, rng = self.w, self.rng
        dt, self.last_t = t - self.last_t, t
        running = not any(a <= t < b for a, b in self.stops)
        if running and not self.was_running:
            self.started = t
        self.was_running = running
        code = self.fault.code if self.fault else None
        p = self.fault.progress(t) if self.fault else 0.0
        fp = self.fault.p if self.fault else {}
        hz = self.setpoint(t) if running else 0.0
        if running and code == "vsd_out_of_range" and p > 0:
            if fp["mode"] == "hunting":
                hz += p * fp["swing"] * math.sin(t / (7 * w.interval) + rng.uniform(-1, 1))
            else:
                hz += (fp["target"] - hz) * p
        s = hz / w.hz
        capacity, head_f, torque_f, ragged = 1.0, 1.0, 1.0, w.gas_ragged
        pi = self.pi * (1 - (1 - fp["pi"]) * p if code == "pump_off" else 1.0)
        if code == "underload":
            wear = 1 - (1 - fp["wear"]) * p
            capacity, head_f, torque_f = wear, wear ** 2, wear ** 3
        elif code == "gas_lock":
            gas = fp["gas"] * p
            capacity, head_f, torque_f = 1 - gas, 1 - gas, 1 - 0.6 * gas
            ragged += fp["ragged"] * p
        elif code == "broken_shaft" and p > 0:
            capacity = head_f = 0.0
            torque_f = fp["torque"]
        elif code == "overload":
            torque_f = 1 + (fp["torque"] - 1) * p
        # Flow through the pump: more intake pressure, more flow; a closed valve chokes it.
        c = 0.5 * w.flow / w.head
        q = capacity * max(0.0, w.flow * s + c * (self.pip - w.pip)) if running else 0.0
        if code == "closed_valve":
            q *= 1 - (1 - fp["opening"]) * p
        floor = fp.get("floor", 0.0)
        inflow = pi * (w.reservoir - self.pip)
        if code == "pump_off" and q > inflow:
            # Near the intake the pump starts running partly empty: it lifts what comes in.
            q = inflow + (q - inflow) * min(1.0, max(0.0, (self.pip - floor) / (0.2 * w.pip)))
        # The annulus: storage between inflow and what the pump takes.
        target = w.reservoir - q / pi if pi > 0 else w.reservoir
        self.pip += (max(target, floor) - self.pip) * (1 - math.exp(-dt / w.annulus_tau))
        flow_share = q / max(w.flow * s, 1e-9) if running else 0.0
        torque = s ** 2 * (0.4 + 0.6 * min(flow_share, 1.5)) * torque_f if running else 0.0
        m = w.magnetising
        current = w.current * math.sqrt(m ** 2 + (1 - m ** 2) * torque ** 2) if running else 0.0
        if running and t - self.started < 3 * w.interval + 10:
            current *= 2.5  # inrush
        current *= 1 + ragged * rng.gauss(0, 1)
        choke = 1 - (1 - fp["opening"]) * p if code == "closed_valve" else 1.0
        head = w.head * s ** 2 * head_f * (1 + 0.25 * (1 - choke)) if running else 0.0
        whp = w.whp * (0.6 + 0.4 * (q / w.flow) ** 2) * (1 + 2.5 * (1 - choke)) + \
            5 * math.sin(2 * math.pi * t / 86400)
        cooling = max(q / w.flow, 0.1) ** 0.5 if running else 1.0
        rise = w.temp_rise * (current / w.current) ** 2 / cooling if running else 0.0
        self.temp += (w.intake_temp + rise - self.temp) * (1 - math.exp(-dt / w.thermal_tau))
        # Lost cooling or a winding fault: on top of what the load explains, as it develops.
        temp = self.temp + (fp["rise"] * p if code == "overheating" else 0.0)
        vibration = w.vibration * (0.3 + 0.7 * s ** 2) if running else 0.05
        if code == "bearing_wear":
            vibration *= 1 + (fp["vibration"] - 1) * p ** 2
        if code == "overload":
            vibration *= 1 + 0.3 * p
        return {"flow_rate": q, "pip": self.pip, "discharge_pressure": self.pip + head
                if running else self.pip + 0.85 * w.head, "wellhead_pressure": whp,
                "motor_current": current, "motor_voltage": w.voltage * s,
                "motor_temp": temp, "intake_temp": w.intake_temp,
                "vibration": vibration, "vsd_frequency": hz,
                "gor": w.gor * (1 + (2 * p if code == "gas_lock" else 0.0)),
                "power": w.power * (0.1 + 0.9 * s * torque) if running else 0.0}


ABSOLUTE_NOISE = ("motor_temp", "intake_temp", "vsd_frequency")


def observe(well: Well, truth: dict[str, float], fault: Fault | None, t: float,
            rng: random.Random, held: dict[str, float]) -> dict[str, Any]:
    """What the transmitters send: noise, resolution, a rare spike, a failed sensor."""
    out: dict[str, Any] = {}
    for metric in well.sensors:
        value = truth[metric]
        sigma = well.noise[metric]
        value += rng.gauss(0, sigma) if metric in ABSOLUTE_NOISE else \
            value * rng.gauss(0, sigma)
        if rng.random() < 2e-4 and metric != "vsd_frequency":
            value *= rng.uniform(1.3, 3)  # a healthy transmitter's rare spike
        if fault is not None and fault.code == "sensor_fault" and \
                fault.p["metric"] == metric and t >= fault.onset:
            mode = fault.p["mode"]
            if mode == "stuck":
                value = held.setdefault(metric, value)
            elif mode == "rail":
                value = fault.p["rail"]
            elif mode == "spikes" and rng.random() < 0.3:
                value *= rng.choice((0.2, 2.5, 4.0))
            elif mode == "drift":
                value *= 1 + fault.p["drift"] * fault.progress(t)
        value = max(value, 0.0) if metric != "motor_temp" and value not in RAILS else value
        unit = well.units.get(metric)
        if unit is not None:
            conv = conversion(metric, unit)
            value = (value - conv.offset) / conv.scale
        value = round(value, well.decimals if metric != "vibration" else 3)
        out[metric] = {"value": value, "unit": unit} if unit else value
    return out


def generate(seed: int, wells: int, readings: int, out: Path) -> tuple[Path, Path, Path]:
    """Half the wells faulty (the codes in turn), a third of the healthy ones unusual.
    Each well draws from its own seeded stream: one well's draws never shift another's."""
    labels_path, attributes_path = out.with_suffix(".labels.jsonl"), \
        out.with_suffix(".attributes.json")
    rows: list[tuple[float, bytes]] = []
    labels, attributes = [], {}
    for n in range(wells):
        device_id = f"R-{n + 1}"
        wrng = random.Random(f"{seed}:{device_id}")
        code = FAULTS[n // 2 % len(FAULTS)] if n % 2 == 0 else None
        unusual = wrng.choice(UNUSUAL) if code is None and wrng.random() < 1 / 3 else None
        well = draw_well(wrng, device_id, unusual, code)
        duration = readings * well.interval
        if code == "pump_off":  # an annulus that draws down within the readings
            well.annulus_tau = min(well.annulus_tau, duration / 20)
        fault = draw_fault(wrng, code, well, duration) if code else None
        steps, stops, gaps = operations(wrng, well, duration,
                                        fault.onset if fault else 2 * duration)
        run = WellRun(well, fault, steps, stops, wrng)
        held: dict[str, float] = {}  # a stuck transmitter's value
        offset = wrng.uniform(0, well.interval)
        for i in range(readings):
            t = offset + i * well.interval
            truth = run.step(t)
            if any(a <= t < b for a, b in gaps):
                continue
            ts = START + timedelta(seconds=t)
            rows.append((t, orjson.dumps({"device_id": device_id, "ts": ts.isoformat(),
                                          "telemetry": observe(well, truth, fault, t, wrng,
                                                               held)})))
        iso = (lambda s: (START + timedelta(seconds=s)).isoformat())  # noqa: E731
        labels.append({"device_id": device_id, "fault": code,
                       "onset": iso(fault.onset) if fault else None,
                       "developed": iso(developed(fault, well)) if fault else None,
                       "min_severity": ("critical" if code == "broken_shaft" else "warning")
                       if code else None,
                       "fault_detail": fault.p if fault else {},
                       "well": {"interval_s": well.interval, "unusual": unusual,
                                "sensors": well.sensors, "units": well.units,
                                "hz": round(well.hz, 1), "steps": steps, "stops": stops,
                                "gaps": gaps}})
        if well.equipment:
            attributes[device_id] = {"device_type": "esp", "attributes": well.equipment}
    rows.sort(key=lambda r: r[0])
    out.write_bytes(b"\n".join(r for _, r in rows) + b"\n")
    labels_path.write_bytes(b"\n".join(orjson.dumps(lab) for lab in labels) + b"\n")
    attributes_path.write_bytes(orjson.dumps(attributes))
    return out, labels_path, attributes_path
