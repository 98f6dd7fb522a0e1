"""An ESP well in time: the drive, the pump on its curve against the well's inflow, free
gas, the motor's current and temperature, vibration - with the slow states that make
it behave like a well (annulus level, winding temperature, gas slugs, GOR wander).

`EspModel.step(t)` advances to model time t (seconds, non-decreasing) and returns the
true values in canonical units; services/simulator/instruments.py turns them into what
the controller publishes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from services.simulator.faults import FAULTS, Effects, FaultPlan, effects
from services.simulator.hydraulics import (
    BASE_FREQUENCY,
    KW_PER_HP,
    PumpState,
    annulus_relaxation,
    free_gas_fraction,
    gas_head_factor,
    pump_rate,
)
from services.simulator.motor import relax
from services.simulator.operations import INRUSH_TIMES_NAMEPLATE, Operations
from services.simulator.units import CANONICAL
from services.simulator.well import WellSpec

__all__ = ["FAULTS", "EspModel", "Reading"]

DAY = 86400.0
SLUG_TAU = 180.0           # s, how long a gas slug lasts
GAS_WAVE_TAU = 2400.0      # s, waves of gas influx from a coning gas cap
GOR_WANDER = 0.03          # relative GOR scatter over days
GOR_TAU = 3 * DAY
WHP_DAILY = 0.04           # daily swing of line pressure (separator, ambient)
SUPPLY_DAILY = 0.01        # daily swing of the supply voltage
OFF_BEP_VIBRATION = 0.8    # vibration grows as (Q/Q_bep - 1)^2 away from best efficiency
GAS_VIBRATION = 0.8        # surging with free gas in the stages
STOPPED_VIBRATION = 0.03   # mm/s: background with the motor off
PUMPED_OFF_SCATTER = 0.3  # relative scatter of pump fill when pumped off
MAX_SUBSTEPS = 200
POCKET_FORMS_BELOW = 0.25  # gas head factor under which the stages trap a gas pocket
POCKET_FORM_TAU = 120.0    # s
FLOW_SMOOTHING_TAU = 600.0  # s, liquid velocity past the intake that separates gas

Reading = dict[str, float]


@dataclass
class _State:
    t: float
    pip: float
    motor_temp: float
    discharge: float
    freq: float
    running: bool
    slug: float = 0.0        # AR(1), unit variance
    gas_pocket: float = 0.0  # share of the stages held by a trapped gas pocket
    flow_avg: float = 0.0    # bbl/d past the intake, smoothed (natural gas separation)
    gor_walk: float = 0.0    # AR(1), unit variance
    gas_wave: float = 0.0    # AR(1), unit variance: slow waves of gas influx
    inrush_left: int = 0


class EspModel:
    """One well. Deterministic for a given spec, plan, operations and rng."""

    def __init__(self, spec: WellSpec, fault: FaultPlan | None = None,
                 operations: Operations | None = None,
                 rng: random.Random | None = None, start: float = 0.0) -> None:
        self.spec = spec
        self.fault = fault
        self.ops = operations or Operations(spec.setpoint_hz)
        self.rng = rng or random.Random(0)
        self.inrush_readings = self.rng.choice((1, 2))
        self.inrush_peak = self.rng.uniform(*INRUSH_TIMES_NAMEPLATE)
        freq = self.ops.setpoint(start) if self.ops.running(start) else 0.0
        self.internals: dict[str, float] = {}
        self.state = _State(start, spec.reservoir.pressure, spec.reservoir.temp_c,
                            spec.reservoir.pressure, freq, freq > 0)
        self._settle(start)

    # --- the physics at one instant -------------------------------------------------

    def _pump(self, eff: Effects, freq: float) -> PumpState:
        return PumpState(speed=freq / BASE_FREQUENCY * eff.wear, head_factor=eff.head_factor,
                         power_factor=eff.power_factor, valve_opening=eff.valve_opening,
                         turning=freq > 0 and not eff.shaft_broken)

    def _gor(self, t: float, eff: Effects) -> float:
        """Producing GOR (per bbl of oil): reservoir value wandering slowly, plus any gas
        breakthrough (which comes per bbl of liquid, so it counts more in wet wells)."""
        res = self.spec.reservoir
        wander = math.exp(GOR_WANDER * self.state.gor_walk)
        influx = eff.free_gas * max(0.0, 1 + eff.free_gas_swing * self.state.gas_wave)
        return res.gor * wander + influx / (1 - res.water_cut)

    def _gvf(self, pip: float, gor: float, eff: Effects) -> float:
        res, gas = self.spec.reservoir, self.spec.gas
        gvf = free_gas_fraction(pip, gor, res.gor, res.bubble_point, res.water_cut,
                                res.temp_c, gas.separation(self.state.flow_avg,
                                                           eff.separator_factor))
        # Free gas arrives in slugs: scatter it (lognormal, mean preserving).
        sigma = self.spec.slug_level + eff.slug_boost
        slug = math.exp(sigma * self.state.slug - sigma * sigma / 2)
        return min(0.95, gvf * slug)

    def _flow(self, pip: float, pump: PumpState, gvf: float, pi: float,
              pr: float) -> tuple[float, float]:
        """(liquid rate, fill): the pump's rate at this intake pressure; at the intake floor
        it can move no more than flows in (pumped off), running partly empty."""
        spec = self.spec
        gas_factor = gas_head_factor(gvf, spec.gas) * (1 - self.state.gas_pocket)
        q = pump_rate(spec.pump, spec.system, pump, pip, spec.reservoir.gradient, gas_factor,
                      gvf)
        floor = spec.reservoir.pip_floor
        inflow = max(0.0, pi * (pr - pip))
        if pip <= floor + 1.0 and q > inflow:
            return inflow, inflow / q
        return q, 1.0

    def _settle(self, t: float) -> None:
        """Start from the steady operating point (or static, if stopped)."""
        st = self.state
        eff = effects(self.fault, t, self.ops.setpoint(t))
        pump = self._pump(eff, st.freq)
        gor = self._gor(t, eff)
        pr = self._reservoir_pressure(t)
        st.flow_avg = self.spec.design["rate"] if pump.turning else 0.0
        for _ in range(2):  # the gas separated depends on the rate found: settle twice
            self._settle_pip(eff, pump, gor, pr)
            if pump.turning:
                st.flow_avg = self._instant(t, eff, st.freq, 0.0)["flow_rate"]
        values = self._instant(t, eff, st.freq, 0.0)
        st.motor_temp = values["_motor_temp_target"]
        st.discharge = values["discharge_pressure"]

    def _settle_pip(self, eff: Effects, pump: PumpState, gor: float, pr: float) -> None:
        st, res = self.state, self.spec.reservoir
        lo, hi = res.pip_floor, pr
        if pump.turning:
            # Steady state: pump rate equals inflow. Excess pump rate grows with PIP.
            for _ in range(40):
                mid = (lo + hi) / 2
                q, _ = self._flow(mid, pump, self._gvf(mid, gor, eff), res.pi * eff.pi_factor,
                                  pr)
                if q > res.pi * eff.pi_factor * (pr - mid):
                    hi = mid
                else:
                    lo = mid
            st.pip = (lo + hi) / 2
        else:
            st.pip = pr

    def _reservoir_pressure(self, t: float) -> float:
        res = self.spec.reservoir
        return res.pressure - res.depletion * t / DAY

    def _instant(self, t: float, eff: Effects, freq: float, inrush: float) -> dict[str, float]:
        """Everything that follows at once from the state (PIP, frequency)."""
        spec, st, res, motor = self.spec, self.state, self.spec.reservoir, self.spec.motor
        pump = self._pump(eff, freq)
        gor = self._gor(t, eff)
        pr = self._reservoir_pressure(t)
        gvf = self._gvf(st.pip, gor, eff) if pump.turning else 0.0
        q, fill = self._flow(st.pip, pump, gvf, res.pi * eff.pi_factor, pr)
        if fill < 1:
            # Pumped off: the level hunts around the intake, the pump gulps fluid and
            # vapour in turn - erratic load.
            jittered = min(1.0, max(0.05, fill * (1 + PUMPED_OFF_SCATTER * st.slug)))
            q, fill = q * jittered / fill, jittered
        gas_factor = gas_head_factor(gvf, spec.gas) * (1 - st.gas_pocket)
        daily = math.sin(2 * math.pi * t / DAY + spec.design.get("phase", 0.0))
        supply = 1 + SUPPLY_DAILY * daily
        if pump.turning:
            # Gas in the stages transmits little torque; a part-filled pump even less.
            shaft_hp = (spec.pump.shaft_power(q / max(fill, 1e-3), pump.speed, res.gradient)
                        * (1 - gvf) * (0.4 + 0.6 * gas_factor) * (0.3 + 0.7 * fill)
                        * pump.power_factor)
            rise = (res.gradient * (1 - gvf) * spec.pump.head(q / max(fill, 1e-3), pump.speed)
                    * pump.head_factor * gas_factor)
            discharge = st.pip + rise
        else:
            shaft_hp = 0.0
            # Pump standing still: the discharge gauge bleeds down to intake pressure.
            discharge = st.pip
        shaft_kw = shaft_hp * KW_PER_HP
        if eff.shaft_broken and freq > 0:
            shaft_kw = 0.0  # the motor turns nothing but its own bearings
        current, power, losses = motor.electrical(shaft_kw, freq, eff.loss_factor, supply)
        if inrush > 0:
            current = max(current, inrush * motor.rated_current)
        rise_c = motor.steady_rise(losses, q, gvf, eff.cooling_factor) if freq > 0 else 0.0
        # Vibration: unbalance velocity ~ speed, worse off the best efficiency point and
        # with gas slugs; the bearings' share is added on top.
        if freq > 0:
            q_rel = q / (spec.pump.q_bep * max(pump.speed, 1e-3)) if pump.turning else 1.0
            vib = (spec.vibration_base * freq / spec.setpoint_hz
                   * (1 + OFF_BEP_VIBRATION * (q_rel - 1) ** 2)
                   * (1 + GAS_VIBRATION * gvf * (1 + 0.5 * abs(st.slug)) + 0.5 * (1 - fill)))
            if eff.shaft_broken:
                vib *= 0.6
            vib += eff.vibration_add * (1 + eff.vibration_erratic * self.rng.gauss(0, 1))
        else:
            vib = STOPPED_VIBRATION
        wellhead = spec.system.wellhead_pressure(q, eff.valve_opening) \
            + spec.system.line_pressure * WHP_DAILY * daily
        # Producing GOR climbs when the flowing pressure falls below the bubble point
        # (gas comes out in the near-wellbore rock).
        below = max(0.0, 1 - st.pip / res.bubble_point) if res.bubble_point > 0 else 0.0
        pip = st.pip
        if fill < 1:
            pip += res.pip_floor * PUMPED_OFF_SCATTER * abs(st.slug)
        return {
            "flow_rate": q, "pip": pip, "discharge_pressure": discharge,
            "wellhead_pressure": wellhead, "motor_current": current,
            "motor_voltage": motor.voltage(freq) * supply if freq > 0 else 0.0,
            "intake_temp": res.temp_c + (0.3 * daily if q > 0 else 0.0),
            "vibration": max(0.0, vib), "vsd_frequency": freq,
            "gor": gor * (1 + 0.5 * below), "power": power,
            "_motor_temp_target": res.temp_c + rise_c, "_gvf": gvf, "_fill": fill,
        }

    # --- time -----------------------------------------------------------------------

    def _drive(self, t: float, dt: float, eff: Effects) -> float:
        """Output frequency: the setpoint (or the fault's), reached at the VSD's ramp rate."""
        st = self.state
        running = self.ops.running(t)
        target = 0.0 if not running else (
            eff.frequency if eff.frequency is not None else self.ops.setpoint(t))
        if running and not st.running:
            st.inrush_left = self.inrush_readings   # a start: breakaway and column
        st.running = running
        if not running:
            return 0.0  # a stop cuts the drive output at once
        step = self.spec.accel_hz_per_s * dt
        return st.freq + max(-step, min(step, target - st.freq))

    def _gas_pocket(self, dt: float, gvf: float) -> None:
        """Gas lock has memory: once the stages lose their head a gas pocket is trapped
        and stays until the gas around the pump redissolves or vents (the annulus
        refills and PIP rises), so a locked pump cycles instead of recovering at once."""
        st, gas = self.state, self.spec.gas
        if gas_head_factor(gvf, gas) < POCKET_FORMS_BELOW:
            st.gas_pocket = relax(st.gas_pocket, 1.0, dt, POCKET_FORM_TAU)
        elif gvf < gas.gvf_onset:
            st.gas_pocket = relax(st.gas_pocket, 0.0, dt, gas.pocket_release_s)

    def step(self, t: float) -> Reading:
        """Advance to model time t and return true values (canonical units)."""
        st, res = self.state, self.spec.reservoir
        dt = max(0.0, t - st.t)
        eff = effects(self.fault, t, self.ops.setpoint(t))
        freq = self._drive(t, dt, eff)
        # Slow random processes (exact AR(1) over dt).
        a = math.exp(-dt / SLUG_TAU)
        st.slug = a * st.slug + math.sqrt(1 - a * a) * self.rng.gauss(0, 1)
        w = math.exp(-dt / GAS_WAVE_TAU)
        st.gas_wave = w * st.gas_wave + math.sqrt(1 - w * w) * self.rng.gauss(0, 1)
        g = math.exp(-dt / GOR_TAU)
        st.gor_walk = g * st.gor_walk + math.sqrt(1 - g * g) * self.rng.gauss(0, 1)
        # Annulus level: mass balance between inflow and the pump, in substeps short
        # against its time constant (storage / PI) so the feedback stays stable.
        pi = res.pi * eff.pi_factor
        tau_days = res.annulus_storage / pi
        n = min(MAX_SUBSTEPS, max(1, math.ceil(dt / DAY / (tau_days / 5))))
        pump = self._pump(eff, freq)
        gor = self._gor(t, eff)
        pr = self._reservoir_pressure(t)
        for _ in range(n):
            gvf = self._gvf(st.pip, gor, eff) if pump.turning else 0.0
            q, _ = self._flow(st.pip, pump, gvf, pi, pr)
            st.pip = max(res.pip_floor, annulus_relaxation(st.pip, pr, pi, q,
                                                           res.annulus_storage, dt / DAY / n))
        self._gas_pocket(dt, self._gvf(st.pip, gor, eff) if pump.turning else 0.0)
        inrush = 0.0
        if st.inrush_left > 0 and freq > 0:
            inrush = self.inrush_peak * (st.inrush_left / self.inrush_readings)
            st.inrush_left -= 1
        values = self._instant(t, eff, freq, inrush)
        st.motor_temp = relax(st.motor_temp, values.pop("_motor_temp_target"), dt,
                              self.spec.thermal_tau_s)
        st.flow_avg = relax(st.flow_avg, values["flow_rate"], dt, FLOW_SMOOTHING_TAU)
        if freq > 0 and not eff.shaft_broken:
            st.discharge = values["discharge_pressure"]
        else:
            st.discharge = relax(st.discharge, values["discharge_pressure"], dt,
                                 self.spec.drain_tau_s)
        values["discharge_pressure"] = st.discharge
        values["motor_temp"] = st.motor_temp
        st.freq, st.t = freq, t
        self.internals = {"gvf": values["_gvf"], "fill": values["_fill"]}
        return {k: v for k, v in values.items() if k in CANONICAL}
