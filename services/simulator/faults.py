"""The ten ESP faults: what physically changes in the well, drawn per instance so no two
cases look alike, and how it develops from onset to fully developed.

A fault never writes a reading directly (except a broken transmitter): it changes a
physical input - inflow, gas, valve opening, torque, cooling, bearing condition, drive
frequency - and the well model works out what every sensor then sees.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from services.simulator.hydraulics import ATMOSPHERE, GAS_Z, RB_PER_SCF_COEFF
from services.simulator.well import WellSpec, vsd_range
from shared.contract import CRITICAL, WARNING, Severity


@dataclass(frozen=True)
class FaultKind:
    code: str
    sudden: bool                      # no ramp: it happens at onset
    min_severity: Severity            # the least a diagnosis should raise once developed
    ramp_hours: tuple[float, float]   # how long it takes to develop, in offline files
    requires: tuple[str, ...]         # sensors without which the signature is invisible
    physics: str


FAULT_KINDS: dict[str, FaultKind] = {k.code: k for k in (
    FaultKind("gas_lock", False, CRITICAL, (0.5, 3.0), ("motor_current",),
              "gas breakthrough overwhelms the separator; gas pockets in the stages "
              "kill the head, flow collapses, the annulus fills (PIP rises)"),
    FaultKind("pump_off", False, WARNING, (2.0, 8.0), ("pip",),
              "inflow declines (scale, skin, depletion) below the pump's capacity; the "
              "annulus is drawn down to the intake and the pump runs partly empty"),
    FaultKind("broken_shaft", True, CRITICAL, (0.0, 0.0), ("motor_current",),
              "the shaft parts: the motor spins unloaded at no-load current, the pump "
              "stands still, no flow, pressures equalise"),
    FaultKind("closed_valve", False, CRITICAL, (0.05, 2.0), ("motor_current",),
              "a wellhead/flowline valve closes (or paraffin/hydrates block the line): "
              "backpressure rises, the pump is pushed back up its curve to shut-in"),
    FaultKind("overload", False, WARNING, (1.0, 6.0), ("motor_current",),
              "more torque for the same speed: viscous emulsion, sand, or rubbing "
              "stages; current and losses rise"),
    FaultKind("underload", False, WARNING, (2.0, 8.0), ("motor_current",),
              "worn/eroded impellers act like smaller ones (affinity in diameter): less "
              "head, less flow, much less power"),
    FaultKind("overheating", False, WARNING, (1.0, 4.0), ("motor_temp",),
              "scale on the motor housing or lost motor oil cuts heat transfer, or a "
              "winding fault adds losses; the winding runs far hotter"),
    FaultKind("bearing_wear", False, WARNING, (4.0, 24.0), ("vibration",),
              "radial/thrust bearings wear: vibration grows ever faster, a little more "
              "friction torque"),
    FaultKind("vsd_out_of_range", False, WARNING, (0.5, 3.0), ("vsd_frequency",),
              "the drive's speed reference drifts or jumps beyond the range it is "
              "configured for; the pump follows the affinity laws"),
    FaultKind("sensor_fault", True, WARNING, (0.0, 0.0), (),
              "one transmitter sticks at a value or reads a rail/impossible value "
              "while the well goes on"),
)}
FAULTS: tuple[str, ...] = tuple(FAULT_KINDS)
ALIASES = {"sensor_flatline": "sensor_fault"}   # the name older stacks used

# Transmitters that can fail, and the values a failed one reads (in its own unit).
DAY = 86400.0
FAILING_SENSORS = ("pip", "discharge_pressure", "wellhead_pressure", "motor_temp",
                   "intake_temp", "flow_rate", "vibration", "motor_current")
MAX_GAS_INFLUX = 4000.0   # scf of breakthrough gas per bbl of liquid, at most
RAIL_HIGH = (9999.0, 32767.0, 65535.0)
NEGATIVE_READINGS = (-9999.0, -999.0, -50.0)


def canonical_fault(name: str) -> str:
    code = ALIASES.get(name, name)
    if code not in FAULT_KINDS:
        raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
    return code


@dataclass(frozen=True)
class Effects:
    """Physical inputs a fault changes; the defaults are a healthy well."""

    wear: float = 1.0              # effective impeller diameter (affinity in diameter)
    head_factor: float = 1.0
    power_factor: float = 1.0      # shaft torque multiplier
    pi_factor: float = 1.0
    free_gas: float = 0.0          # extra free gas, scf per bbl of liquid (breakthrough)
    separator_factor: float = 1.0
    valve_opening: float = 1.0
    cooling_factor: float = 1.0
    loss_factor: float = 1.0       # motor losses multiplier (winding fault)
    vibration_add: float = 0.0     # mm/s
    vibration_erratic: float = 0.0  # relative scatter of the added vibration
    slug_boost: float = 0.0        # more erratic gas
    free_gas_swing: float = 0.0    # gas arriving in waves of tens of minutes (0: steady)
    shaft_broken: bool = False
    frequency: float | None = None  # the drive's output instead of the setpoint


@dataclass(frozen=True)
class FaultPlan:
    code: str
    onset: float                   # seconds of model time
    ramp: float                    # seconds over which the cause develops (0 when sudden)
    params: dict[str, float | str] = field(default_factory=dict)
    lag: float = 0.0               # seconds the well takes to show it all (annulus, heat)

    @property
    def kind(self) -> FaultKind:
        return FAULT_KINDS[self.code]

    @property
    def developed(self) -> float:
        """When the signature is fully there: the cause's ramp plus the well's own lag."""
        return self.onset + self.ramp + self.lag

    def progress(self, t: float) -> float:
        if t < self.onset:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (t - self.onset) / self.ramp)

    @property
    def sensor(self) -> tuple[str, str, float | None] | None:
        """(metric, mode, value) for a sensor fault."""
        if self.code != "sensor_fault":
            return None
        value = self.params.get("value")
        return (str(self.params["metric"]), str(self.params["mode"]),
                None if value is None else float(value))


def plan_fault(code: str, spec: WellSpec, onset: float, ramp: float,
               rng: random.Random) -> FaultPlan:
    """Draw this instance's magnitude and mode."""
    code = canonical_fault(code)
    kind = FAULT_KINDS[code]
    ramp = 0.0 if kind.sudden else ramp
    p: dict[str, float | str] = {}
    res = spec.reservoir
    if code == "gas_lock":
        # Enough free gas to lock the stages at the usual intake pressure, even with
        # natural separation helped by the rate halving.
        separator_final = rng.uniform(0.1, 0.4)
        p["separator_final"] = separator_final
        sep = spec.gas.separation(spec.design["rate"] / 2, separator_final)
        gvf = min(0.85, spec.gas.gvf_lock * rng.uniform(1.1, 1.5))
        p_abs = spec.design["pip"] + ATMOSPHERE
        bg = RB_PER_SCF_COEFF * GAS_Z * (res.temp_c * 9 / 5 + 491.67) / p_abs
        free_per_liquid = gvf / (1 - gvf) / (bg * (1 - sep))
        p["free_gas_final"] = max(rng.uniform(0.5, 1.5) * res.gor * (1 - res.water_cut),
                                  min(MAX_GAS_INFLUX, free_per_liquid))
        p["slug_boost"] = rng.uniform(0.15, 0.35)
        # Some wells get their gas in waves: the lock breaks when a wave passes and
        # the annulus has refilled, then sets again - intermittent production.
        p["swing"] = rng.choice((0.0, 0.0, rng.uniform(0.8, 1.5)))
    elif code == "pump_off":
        # Maximum inflow ends at 25-50 % of today's rate: well below pump capacity.
        design_drawdown = res.pressure - spec.design["pip"]
        p["pi_final"] = rng.uniform(0.25, 0.5) * design_drawdown / (res.pressure - res.pip_floor)
    elif code == "closed_valve":
        p["opening_final"] = rng.choice((0.002, rng.uniform(0.005, 0.05)))
    elif code == "overload":
        p["mode"] = rng.choice(("emulsion", "sand", "rubbing"))
        p["power_final"] = rng.uniform(1.35, 1.75)
        p["head_final"] = rng.uniform(0.85, 0.95) if p["mode"] == "emulsion" else 0.97
        p["vibration_final"] = rng.uniform(0.5, 1.5) if p["mode"] == "sand" else 0.0
    elif code == "underload":
        p["wear_final"] = rng.uniform(0.72, 0.84)
    elif code == "overheating":
        p["mode"] = rng.choices(("cooling", "winding"), weights=(0.7, 0.3))[0]
        if p["mode"] == "cooling":
            p["cooling_final"], p["loss_final"] = rng.uniform(0.3, 0.5), 1.0
        else:
            p["cooling_final"], p["loss_final"] = rng.uniform(0.75, 0.9), rng.uniform(2.0, 3.0)
    elif code == "bearing_wear":
        p["vibration_final"] = rng.uniform(2.5, 8.0)
        p["power_final"] = 1 + rng.uniform(0.02, 0.06)
    elif code == "vsd_out_of_range":
        # Beyond the range the drive is configured for (well_attributes).
        low, high = vsd_range(spec.setpoint_hz)
        p["target_hz"] = high + rng.uniform(2, 6) if rng.random() < 0.5 else \
            low - rng.uniform(2, 6)
        p["mode"] = rng.choice(("drift", "drift", "jump"))
        if p["mode"] == "jump":
            ramp = 0.0
    elif code == "sensor_fault":
        candidates = [m for m in FAILING_SENSORS if m in spec.sensors]
        metric = rng.choice(candidates)
        mode = rng.choices(("stuck", "rail_zero", "rail_high", "negative"),
                           weights=(0.5, 0.15, 0.15, 0.2))[0]
        p["metric"], p["mode"] = metric, mode
        if mode == "rail_zero":
            p["value"] = 0.0
        elif mode == "rail_high":
            p["value"] = rng.choice(RAIL_HIGH)
        elif mode == "negative":
            p["value"] = rng.choice(NEGATIVE_READINGS)
    return FaultPlan(code, onset, ramp, p, fault_lag(code, spec, p))


def fault_lag(code: str, spec: WellSpec, p: dict[str, float | str]) -> float:
    """How long after its cause is complete the well shows the fault fully."""
    res = spec.reservoir
    if code == "pump_off":
        # The annulus must be pumped down to the intake at the pump's excess over inflow.
        pip = spec.design["pip"]
        inflow = res.pi * float(p["pi_final"]) * (res.pressure - (pip + res.pip_floor) / 2)
        net = max(0.2 * spec.design["rate"], spec.design["rate"] - inflow)
        return DAY * res.annulus_storage * (pip - res.pip_floor) / net
    if code in ("overheating", "closed_valve", "gas_lock"):
        return 2 * spec.thermal_tau_s  # the winding heats with its thermal time constant
    return 0.0


def effects(plan: FaultPlan | None, t: float, setpoint: float) -> Effects:
    """The physical inputs at model time t."""
    if plan is None or t < plan.onset:
        return Effects()
    s, p, code = plan.progress(t), plan.params, plan.code
    if code == "gas_lock":
        # Gas arrives slowly, then builds fast (coning accelerates once it breaks through).
        return Effects(free_gas=float(p["free_gas_final"]) * s ** 2,
                       separator_factor=1 - (1 - float(p["separator_final"])) * s,
                       slug_boost=float(p["slug_boost"]) * s,
                       free_gas_swing=float(p["swing"]))
    if code == "pump_off":
        return Effects(pi_factor=1 - (1 - float(p["pi_final"])) * s)
    if code == "broken_shaft":
        return Effects(shaft_broken=True)
    if code == "closed_valve":
        # Closing geometrically: each step halves Cv by the same share, so flow falls
        # through the ramp instead of all in its last minutes.
        return Effects(valve_opening=math.exp(s * math.log(float(p["opening_final"]))))
    if code == "overload":
        return Effects(power_factor=1 + (float(p["power_final"]) - 1) * s,
                       head_factor=1 - (1 - float(p["head_final"])) * s,
                       vibration_add=float(p["vibration_final"]) * s, vibration_erratic=0.3)
    if code == "underload":
        return Effects(wear=1 - (1 - float(p["wear_final"])) * s)
    if code == "overheating":
        return Effects(cooling_factor=1 - (1 - float(p["cooling_final"])) * s,
                       loss_factor=1 + (float(p["loss_final"]) - 1) * s)
    if code == "bearing_wear":
        # Wear feeds on itself: vibration grows with the square of progress.
        return Effects(vibration_add=float(p["vibration_final"]) * s ** 2,
                       vibration_erratic=0.25,
                       power_factor=1 + (float(p["power_final"]) - 1) * s)
    if code == "vsd_out_of_range":
        target = float(p["target_hz"])
        return Effects(frequency=setpoint + (target - setpoint) * s)
    return Effects()  # sensor_fault: the well itself is healthy
