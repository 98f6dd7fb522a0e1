"""Hydraulics of an ESP well: pump curve with the affinity laws, free gas at the intake,
the system the pump discharges into, and the pump's rate for a given intake pressure.

Internal units are field units: bbl/d, psi, ft, psi/ft, hp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_FREQUENCY = 60.0       # Hz at which catalog pump curves are published
WATER_GRADIENT = 0.433      # psi/ft of fresh water
HHP_PER_BPD_PSI = 1.7023e-5  # hydraulic horsepower = Q[bbl/d] * dP[psi] * 1.7023e-5
KW_PER_HP = 0.7457
ATMOSPHERE = 14.7           # psi; gauge -> absolute for gas volumes
RB_PER_SCF_COEFF = 0.00504  # Bg [rb/scf] = 0.00504 * z * T[degR] / p[psia]
GAS_Z = 0.9                 # gas deviation factor, constant is good enough at intake


@dataclass(frozen=True)
class PumpCurve:
    """A multistage centrifugal pump at BASE_FREQUENCY: H = H0 * (1 - (Q/Qmax)^2) per stage.

    Affinity laws with speed ratio r = f/BASE_FREQUENCY: Q ~ r, H ~ r^2, shaft power ~ r^3.
    Worn impellers act like a smaller impeller diameter d, and obey the same laws in d.
    """

    stages: int
    stage_head0: float          # ft per stage at zero flow
    q_max: float                # bbl/d at zero head (open flow)
    q_bep: float                # bbl/d at best efficiency
    bep_efficiency: float       # 0.5-0.7 for ESP stages
    shutin_power_fraction: float  # shaft power at zero flow / at BEP (disk friction, recirculation)

    def head(self, q: float, speed: float) -> float:
        """Total dynamic head in ft of the pumped fluid; speed = r * d."""
        if speed <= 0:
            return 0.0
        return max(0.0, self.stages * self.stage_head0 * (speed * speed - (q / self.q_max) ** 2))

    def bep_power_per_gradient(self) -> float:
        """Shaft hp at BEP and base speed, per psi/ft of fluid gradient."""
        return (self.q_bep * self.head(self.q_bep, 1.0) * HHP_PER_BPD_PSI
                / self.bep_efficiency)

    def shaft_power(self, q: float, speed: float, gradient: float) -> float:
        """Shaft hp: linear in flow from the shut-in value to BEP, scaled by speed^3 and
        fluid density (power curves of centrifugal pumps are close to straight lines)."""
        if speed <= 0:
            return 0.0
        a = self.shutin_power_fraction
        x = q / (speed * self.q_bep)
        return speed ** 3 * gradient * self.bep_power_per_gradient() * (a + (1 - a) * x)

    def capacity(self, speed: float) -> float:
        return self.q_max * max(0.0, speed)


@dataclass(frozen=True)
class GasHandling:
    """What free gas does to this pump (radial stages lock at lower GVF than mixed flow)."""

    separator_efficiency: float  # fraction of free gas the rotary separator vents
    natural_flow: float          # bbl/d at which half the gas rises past the intake
    gvf_onset: float             # GVF at the pump where head starts to degrade
    gvf_lock: float              # GVF at which the stages hold a gas pocket: no head
    pocket_release_s: float      # how fast a trapped pocket clears once gas stops coming

    def separation(self, flow: float, separator_factor: float = 1.0) -> float:
        """Share of the free gas that never enters the stages: natural separation (bubbles
        rise at v_b while the liquid passes the intake at v_l: v_b / (v_b + v_l)), then the
        separator on what is left."""
        natural = 1.0 / (1.0 + max(0.0, flow) / self.natural_flow)
        return 1.0 - (1.0 - natural) * (1.0 - self.separator_efficiency * separator_factor)


def free_gas_fraction(pip: float, gor: float, gor_solution: float, bubble_point: float,
                      water_cut: float, temp_c: float, separation: float) -> float:
    """Gas volume fraction entering the pump stages.

    Below the bubble point the solution gas ratio falls (roughly linearly) and the
    difference is free gas; produced gas above the solution GOR (gas coning, a gas cap)
    is free at any pressure. Its volume at intake is Bg = 0.00504 z T / p; `separation`
    is the share kept out of the pump (GasHandling.separation).
    """
    p_abs = max(pip, 0.0) + ATMOSPHERE
    rs = gor_solution * min(1.0, p_abs / (bubble_point + ATMOSPHERE))
    free_scf_per_bbl_liquid = max(0.0, gor - rs) * (1.0 - water_cut)
    bg = RB_PER_SCF_COEFF * GAS_Z * (temp_c * 9 / 5 + 491.67) / p_abs
    vg = free_scf_per_bbl_liquid * bg * (1.0 - separation)
    return vg / (vg + 1.0)


def gas_head_factor(gvf: float, gas: GasHandling) -> float:
    """Head left by free gas: none lost below onset, all lost at the lock fraction."""
    if gvf <= gas.gvf_onset:
        return 1.0
    x = min(1.0, (gvf - gas.gvf_onset) / (gas.gvf_lock - gas.gvf_onset))
    return max(0.0, 1.0 - x ** 1.5)


@dataclass(frozen=True)
class System:
    """What the pump discharges into: wellhead backpressure, tubing column and friction."""

    depth: float            # ft, pump setting depth (true vertical)
    line_pressure: float    # psi downstream of the wellhead choke/valve
    choke_coeff: float      # psi/(bbl/d)^2 across choke and flowline, valve fully open
    friction_coeff: float   # psi/(bbl/d)^2 of tubing friction

    def wellhead_pressure(self, q: float, valve_opening: float) -> float:
        # A valve's pressure drop goes as (Q / Cv)^2 and Cv as its opening.
        return self.line_pressure + self.choke_coeff * q * q / max(valve_opening, 1e-4) ** 2

    def discharge_pressure(self, q: float, gradient: float, valve_opening: float) -> float:
        return (self.wellhead_pressure(q, valve_opening) + gradient * self.depth
                + self.friction_coeff * q * q)


@dataclass(frozen=True)
class PumpState:
    """Effective condition of the pump, from the drive and faults."""

    speed: float = 1.0            # f/BASE_FREQUENCY times wear (effective diameter)
    head_factor: float = 1.0      # viscosity and other head losses
    power_factor: float = 1.0     # extra torque: viscosity, sand, rubbing, bearings
    valve_opening: float = 1.0    # wellhead/flowline valve
    turning: bool = True          # False when stopped or the shaft is broken


def pump_rate(pump: PumpCurve, system: System, state: PumpState, pip: float,
              gradient: float, gas_factor: float, gvf: float) -> float:
    """Liquid rate where the pump's pressure rise meets what the system asks above the
    intake: dP_pump(Q) = P_discharge(Q) - PIP. Both sides are monotone in Q, so a
    bracketed secant (Illinois) converges in a handful of steps."""
    if not state.turning or state.speed <= 0:
        return 0.0
    mix_gradient = gradient * (1.0 - gvf)

    def residual(q: float) -> float:
        rise = mix_gradient * pump.head(q, state.speed) * state.head_factor * gas_factor
        return rise - (system.discharge_pressure(q, gradient, state.valve_opening) - pip)

    lo, hi = 0.0, pump.capacity(state.speed)
    f_lo, f_hi = residual(lo), residual(hi)
    if f_lo <= 0:
        return 0.0  # cannot lift the column: the check valve stays shut (dead head)
    side = 0
    q = lo
    for _ in range(60):
        q = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        f = residual(q)
        if abs(f) < 0.05 or hi - lo < 0.05:
            break
        if f > 0:
            lo, f_lo = q, f
            if side == 1:
                f_hi /= 2
            side = 1
        else:
            hi, f_hi = q, f
            if side == -1:
                f_lo /= 2
            side = -1
    return max(0.0, q)


def annulus_relaxation(pip: float, reservoir_pressure: float, pi: float,
                       pump_out: float, storage: float, dt_days: float) -> float:
    """Intake pressure after dt: the annulus fills at inflow PI*(Pr - PIP) and empties at
    the pump rate; storage is bbl per psi of annulus level. Exact for a frozen pump rate."""
    equilibrium = reservoir_pressure - pump_out / pi
    return equilibrium + (pip - equilibrium) * math.exp(-dt_days * pi / storage)
