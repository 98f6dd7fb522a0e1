"""The submersible induction motor: current, electrical power, losses and temperature.

Fed by a variable speed drive at constant volts per hertz up to the base frequency, so
the magnetizing current (the no-load current, in quadrature with the load current) stays
roughly constant and the active current carries the electrical power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.simulator.hydraulics import BASE_FREQUENCY

SQRT3 = math.sqrt(3.0)
FIXED_LOSS_SHARE = 0.4     # share of rated losses that are core + friction (~ frequency)
NATURAL_CONVECTION = 0.25  # heat transfer left with no flow past the motor, vs rated flow
COOLING_VELOCITY_EXPONENT = 0.8  # forced convection: h ~ v^0.8 (Dittus-Boelter)
GAS_COOLING_LOSS = 0.5     # free gas around the motor carries heat away poorly
GAS_COOLING_MAX_GVF = 0.6  # the motor sits below the intake: never all gas


@dataclass(frozen=True)
class Motor:
    rated_power_kw: float        # shaft output at BASE_FREQUENCY
    rated_voltage: float         # V at BASE_FREQUENCY
    rated_current: float         # A nameplate
    magnetizing_current: float   # A, the no-load current (25-35 % of nameplate)
    rated_efficiency: float
    rated_rise_c: float          # winding-to-fluid rise at rated losses and design flow
    design_flow: float           # bbl/d past the motor its cooling is rated for

    @property
    def rated_losses_kw(self) -> float:
        return self.rated_power_kw * (1.0 / self.rated_efficiency - 1.0)

    def voltage(self, freq: float) -> float:
        """Constant V/Hz up to the base frequency, then constant voltage (field weakening)."""
        return self.rated_voltage * min(1.0, max(0.0, freq) / BASE_FREQUENCY)

    def electrical(self, shaft_kw: float, freq: float, loss_factor: float = 1.0,
                   supply: float = 1.0) -> tuple[float, float, float]:
        """(current A, electrical power kW, losses kW) delivering shaft_kw at freq.

        Copper losses go as current squared, which depends on the power drawn: two
        fixed-point passes settle it.
        """
        if freq <= 0:
            return 0.0, 0.0, 0.0
        volts = self.voltage(freq) * supply
        fixed = self.rated_losses_kw * FIXED_LOSS_SHARE * freq / BASE_FREQUENCY
        copper_rated = self.rated_losses_kw * (1 - FIXED_LOSS_SHARE)
        current = self.rated_current
        power = losses = 0.0
        for _ in range(3):
            losses = (fixed + copper_rated * (current / self.rated_current) ** 2) * loss_factor
            power = shaft_kw + losses
            active = power * 1000.0 / (SQRT3 * volts)
            current = math.hypot(self.magnetizing_current, active)
        return current, power, losses

    def cooling(self, flow: float, gvf: float) -> float:
        """Heat transfer to the well fluid relative to the rated condition."""
        forced = max(0.0, flow / self.design_flow) ** COOLING_VELOCITY_EXPONENT
        return ((NATURAL_CONVECTION + (1 - NATURAL_CONVECTION) * forced)
                * (1.0 - GAS_COOLING_LOSS * min(gvf, GAS_COOLING_MAX_GVF)))

    def steady_rise(self, losses_kw: float, flow: float, gvf: float,
                    cooling_factor: float = 1.0) -> float:
        """Winding temperature above the fluid once heat in equals heat out."""
        return (self.rated_rise_c * losses_kw / self.rated_losses_kw
                / max(1e-3, self.cooling(flow, gvf) * cooling_factor))


def relax(value: float, target: float, dt: float, tau: float) -> float:
    """First-order lag over dt (exact for a constant target)."""
    return target + (value - target) * math.exp(-dt / tau)
