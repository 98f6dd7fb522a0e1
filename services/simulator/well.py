"""One well, designed the way an ESP is sized: draw the reservoir, fluid and the rate
wanted at the operator's frequency, then pick stages and a motor that deliver it.

Everything is drawn from a random.Random seeded by (seed, device id), so a device is
the same well on every run and its healthy baseline never depends on its fault.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from services.simulator.hydraulics import (
    BASE_FREQUENCY,
    KW_PER_HP,
    WATER_GRADIENT,
    GasHandling,
    PumpCurve,
    System,
)
from services.simulator.motor import SQRT3, Motor
from services.simulator.units import CANONICAL, METRICS, UNIT_SYSTEMS, units_for

# Sensors a controller may lack, and how often (the drive's current and frequency are
# always there: the VSD measures them itself).
OPTIONAL_SENSORS: dict[str, float] = {
    "flow_rate": 0.2, "vibration": 0.2, "gor": 0.35, "discharge_pressure": 0.25,
    "wellhead_pressure": 0.1, "intake_temp": 0.1, "power": 0.15, "motor_voltage": 0.1,
}
DOWNHOLE_GAUGE = ("pip", "discharge_pressure", "intake_temp", "motor_temp", "vibration")
NO_DOWNHOLE_GAUGE = 0.04     # some wells run without a downhole gauge at all
CURRENT_PER_SQRT_KW = 6.0    # nameplate A per sqrt(kW): 100 kW motor ~ 60 A, ~1000 V
MOTOR_VOLTS = (380.0, 4500.0)  # the catalog's range

UNIT_SYSTEM_WEIGHTS = {"canonical": 0.2, "field": 0.35, "metric": 0.2, "metric_bar": 0.1,
                       "mixed": 0.15}
# How often a reading repeats the units (0: only the first reading of each metric).
UNIT_EVERY_CHOICES = (1, 1, 10, 10, 60, 0)

# Measurement noise, 1 sigma in canonical units: (absolute, relative to the value).
NOISE: dict[str, tuple[float, float]] = {
    "flow_rate": (3.0, 0.015), "pip": (1.0, 0.001), "discharge_pressure": (2.0, 0.001),
    "wellhead_pressure": (0.8, 0.002), "motor_current": (0.05, 0.004),
    "motor_voltage": (1.0, 0.002), "motor_temp": (0.15, 0.0), "intake_temp": (0.08, 0.0),
    "vibration": (0.02, 0.06), "vsd_frequency": (0.02, 0.0), "gor": (2.0, 0.02),
    "power": (0.1, 0.005),
}


@dataclass(frozen=True)
class Reservoir:
    pressure: float           # psi, static, referred to the pump intake depth
    pi: float                 # productivity index, bbl/d per psi (straight-line IPR)
    depletion: float          # psi/day of slow decline
    bubble_point: float       # psi
    gor: float                # scf/bbl solution (and producing) gas-oil ratio
    water_cut: float          # fraction of the liquid that is water
    gradient: float           # psi/ft of the produced liquid
    temp_c: float             # degC at the pump (geothermal)
    annulus_storage: float    # bbl per psi of annulus fluid level (sets buildup speed)
    pip_floor: float          # psi: below this the intake sucks vapour (pumped off)


@dataclass(frozen=True)
class WellSpec:
    device_id: str
    pump: PumpCurve
    gas: GasHandling
    system: System
    motor: Motor
    reservoir: Reservoir
    setpoint_hz: float
    accel_hz_per_s: float      # VSD ramp rate
    thermal_tau_s: float       # motor thermal time constant
    drain_tau_s: float         # discharge gauge bleeding to intake pressure when stopped
    vibration_base: float      # mm/s at setpoint near BEP
    slug_level: float          # how erratic free gas is in this well
    noise_factor: float        # this well's transmitters: 0.5 (good) to 2 (poor)
    unit_system: str           # canonical, field, metric, metric_bar or mixed
    units: dict[str, str]      # metric -> unit published
    unit_every: int            # units ride along every n readings (0: first only)
    sensors: tuple[str, ...]   # metrics this controller publishes
    design: dict[str, float] = field(default_factory=dict)  # what it was sized for


def well_rng(seed: int | str, device_id: str, stream: str = "design") -> random.Random:
    """Independent, reproducible random streams per well (str seeds hash stably)."""
    return random.Random(f"{seed}:{device_id}:{stream}")


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _setpoint(rng: random.Random) -> float:
    """Most operators run 50-60 Hz; some run low (45-50) or a little high (60-62)."""
    u = rng.random()
    hz = rng.uniform(45, 50) if u < 0.1 else rng.uniform(60, 62) if u < 0.2 \
        else rng.uniform(50, 60)
    return round(hz * 2) / 2


def _units(rng: random.Random) -> tuple[str, dict[str, str]]:
    names = list(UNIT_SYSTEM_WEIGHTS)
    system = rng.choices(names, weights=list(UNIT_SYSTEM_WEIGHTS.values()))[0]
    if system == "mixed":
        return system, {m: rng.choice(units_for(m)) for m in METRICS}
    units = dict(UNIT_SYSTEMS[system])
    if system == "field":  # field controllers differ on these two
        units["vibration"] = rng.choice(("in/s", "mm/s"))
        units["power"] = rng.choice(("hp", "kW"))
    return system, units


def _sensors(rng: random.Random) -> tuple[str, ...]:
    present = set(METRICS)
    for metric, p_missing in OPTIONAL_SENSORS.items():
        if rng.random() < p_missing:
            present.discard(metric)
    if rng.random() < NO_DOWNHOLE_GAUGE:
        present.difference_update(DOWNHOLE_GAUGE)
    return tuple(m for m in METRICS if m in present)


def design_well(device_id: str, seed: int | str = 0) -> WellSpec:
    rng = well_rng(seed, device_id)
    setpoint = _setpoint(rng)
    r = setpoint / BASE_FREQUENCY
    # Reservoir and fluid.
    water_cut = rng.uniform(0.1, 0.95)
    oil_sg = 141.5 / (131.5 + rng.uniform(20, 40))           # from API gravity
    gradient = WATER_GRADIENT * (water_cut * rng.uniform(1.01, 1.1)
                                 + (1 - water_cut) * oil_sg)
    depth = rng.uniform(3500, 9500)
    line_pressure = rng.uniform(60, 300)
    for _ in range(200):  # draw until the well needs a pump to lift a real column
        rate = _log_uniform(rng, 600, 4000)                      # bbl/d wanted at setpoint
        pip = rng.triangular(300, 1800, 900)
        pi = _log_uniform(rng, 0.4, 8.0)
        pr = pip + rate / pi
        choke_dp, friction_dp = rng.uniform(15, 120), rng.uniform(20, 180) * depth / 7000
        system = System(depth, line_pressure, choke_dp / rate ** 2, friction_dp / rate ** 2)
        dp_needed = system.discharge_pressure(rate, gradient, 1.0) - pip
        # Not a naturally flowing well, and a pump with a real job to do.
        if pr < 0.95 * (gradient * depth + line_pressure) and dp_needed > 600:
            break
    # Pump: BEP near the wanted rate at the setpoint; stages for the head it takes.
    q_bep = rate / (r * rng.uniform(0.8, 1.15))
    q_max = q_bep / rng.uniform(0.58, 0.68)
    stage_head0 = rng.uniform(20, 50)
    total_head0 = dp_needed / gradient / (r * r - (rate / q_max) ** 2)
    pump = PumpCurve(stages=max(10, round(total_head0 / stage_head0)),
                     stage_head0=stage_head0, q_max=q_max, q_bep=q_bep,
                     bep_efficiency=rng.uniform(0.5, 0.7),
                     shutin_power_fraction=rng.uniform(0.35, 0.55))
    # Motor: loaded 60-90 % at the setpoint (a VSD motor gives power ~ frequency).
    shaft_kw = pump.shaft_power(rate, r, gradient) * KW_PER_HP
    rated_kw = shaft_kw / (rng.uniform(0.6, 0.9) * min(r, 1.0))
    efficiency = rng.uniform(0.84, 0.91)
    magnetizing = rng.uniform(0.25, 0.35)
    electrical_kw = rated_kw / efficiency
    # Bigger motors run more current and more voltage: ~ sqrt(power) each, scattered.
    current = min(120.0, max(30.0, CURRENT_PER_SQRT_KW * math.sqrt(electrical_kw)
                             * rng.uniform(0.7, 1.4)))
    volts = electrical_kw * 1000 / (SQRT3 * current * math.sqrt(1 - magnetizing ** 2))
    if not MOTOR_VOLTS[0] <= volts <= MOTOR_VOLTS[1]:  # size the current to a real motor
        volts = min(MOTOR_VOLTS[1], max(MOTOR_VOLTS[0], volts))
        current = electrical_kw * 1000 / (SQRT3 * volts * math.sqrt(1 - magnetizing ** 2))
    motor = Motor(rated_power_kw=rated_kw, rated_voltage=round(volts / 5) * 5,
                  rated_current=round(current, 1), magnetizing_current=magnetizing * current,
                  rated_efficiency=efficiency, rated_rise_c=rng.uniform(20, 40),
                  design_flow=rate)
    separator = 0.0 if rng.random() < 0.2 else rng.uniform(0.5, 0.9)
    annulus_capacity = rng.uniform(0.015, 0.04)                # bbl/ft around the pump
    # Bubbles rise at 0.5-0.8 ft/s: natural separation is half when the liquid passes
    # the intake that fast (ft/s * bbl/ft * s/day = bbl/day).
    natural_flow = rng.uniform(0.5, 0.8) * annulus_capacity * 86400
    gas = GasHandling(separator_efficiency=separator, natural_flow=natural_flow,
                      gvf_onset=rng.uniform(0.06, 0.15), gvf_lock=rng.uniform(0.25, 0.45),
                      # Some stages shed a gas pocket in minutes; others hold it for hours.
                      pocket_release_s=rng.choice((rng.uniform(900, 3600),
                                                   rng.uniform(4 * 3600, 8 * 3600))))
    reservoir = Reservoir(
        pressure=pr, pi=pi, depletion=rng.uniform(0.0, 3.0),
        bubble_point=min(pr, pip * rng.uniform(0.25, 1.1)),
        gor=_log_uniform(rng, 120, 900), water_cut=water_cut, gradient=gradient,
        temp_c=rng.uniform(15, 30) + depth * rng.uniform(0.004, 0.007),  # geothermal
        annulus_storage=annulus_capacity / gradient,
        pip_floor=rng.uniform(20, 60))
    unit_system, units = _units(rng)
    return WellSpec(
        device_id=device_id, pump=pump, gas=gas, system=system, motor=motor,
        reservoir=reservoir, setpoint_hz=setpoint, accel_hz_per_s=rng.uniform(0.3, 1.0),
        thermal_tau_s=rng.uniform(900, 2400), drain_tau_s=rng.uniform(120, 600),
        vibration_base=rng.uniform(0.2, 0.9), slug_level=rng.uniform(0.05, 0.25),
        noise_factor=rng.uniform(0.5, 2.0), unit_system=unit_system, units=units,
        unit_every=rng.choice(UNIT_EVERY_CHOICES), sensors=_sensors(rng),
        design={"rate": rate, "pip": pip, "shaft_kw": shaft_kw,
                "phase": rng.uniform(0, 2 * math.pi)})


def vsd_range(setpoint_hz: float) -> tuple[float, float]:
    """The frequencies the drive of a well run at `setpoint_hz` is configured for."""
    return max(30.0, setpoint_hz - 15.0), min(70.0, setpoint_hz + 8.0)


def well_attributes(spec: WellSpec) -> dict[str, float]:
    """The well's equipment as an integrator would enter it (shared/equipment.py): the
    motor's nameplate, the pump's recommended operating range at the operator's
    frequency, the drive's configured range, setting depth and the lowest intake
    pressure the pump may run at."""
    speed = spec.setpoint_hz / BASE_FREQUENCY
    hottest_healthy = spec.reservoir.temp_c + spec.motor.rated_rise_c
    return {
        "motor_rated_current": spec.motor.rated_current,
        "motor_rated_voltage": spec.motor.rated_voltage,
        "motor_rated_power": round(spec.motor.rated_power_kw, 1),
        # Insulation rated well above the winding's healthy running temperature.
        "motor_max_temp": round(hottest_healthy + max(40.0, 1.5 * spec.motor.rated_rise_c)),
        "pump_min_flow": round(0.5 * spec.pump.q_bep * speed),
        "pump_max_flow": round(1.4 * spec.pump.q_bep * speed),
        "vsd_min_hz": vsd_range(spec.setpoint_hz)[0],
        "vsd_max_hz": vsd_range(spec.setpoint_hz)[1],
        "setting_depth": round(spec.system.depth),
        "min_intake_pressure": round(2 * spec.reservoir.pip_floor + 50),
    }


def with_sensors(spec: WellSpec, needed: tuple[str, ...]) -> WellSpec:
    """The same well with these sensors fitted (a fault's signature must be observable)."""
    if all(m in spec.sensors for m in needed):
        return spec
    present = set(spec.sensors) | set(needed)
    return WellSpec(**{**spec.__dict__, "sensors": tuple(m for m in CANONICAL if m in present)})
