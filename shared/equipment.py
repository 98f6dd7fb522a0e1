"""A well's own equipment: nameplate and operating data, in the canonical units of
shared/units.py. Kept per device (`devices.metadata.attributes`, set through the API),
carried by the simulator's wells, and what alert rules and diagnosis judge a well by
where it is known, instead of one textbook band for every well."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Positive = Annotated[float, Field(gt=0, le=1_000_000)]

# attribute -> (what it is, unit): the documentation of each field, and what a rule may
# reference (`{"attribute": ...}`).
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "motor_rated_current": ("motor nameplate current", "A"),
    "motor_rated_voltage": ("motor nameplate voltage", "V"),
    "motor_rated_power": ("motor nameplate power", "kW"),
    "motor_max_temp": ("highest winding temperature the motor is rated for", "degC"),
    "pump_min_flow": ("lower end of the pump's recommended operating range", "bbl/d"),
    "pump_max_flow": ("upper end of the pump's recommended operating range", "bbl/d"),
    "vsd_min_hz": ("lowest frequency the drive is configured to run at", "Hz"),
    "vsd_max_hz": ("highest frequency the drive is configured to run at", "Hz"),
    "setting_depth": ("pump setting depth", "ft"),
    "min_intake_pressure": ("lowest intake pressure the pump may run at (NPSH)", "psi"),
}


class Equipment(BaseModel):
    """Every field is optional: a rule that needs one a device lacks skips that device
    and says so in its status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    motor_rated_current: Positive | None = None
    motor_rated_voltage: Positive | None = None
    motor_rated_power: Positive | None = None
    motor_max_temp: Annotated[float, Field(gt=0, le=400)] | None = None
    pump_min_flow: Annotated[float, Field(ge=0, le=100_000)] | None = None
    pump_max_flow: Annotated[float, Field(gt=0, le=100_000)] | None = None
    vsd_min_hz: Annotated[float, Field(ge=0, le=200)] | None = None
    vsd_max_hz: Annotated[float, Field(gt=0, le=200)] | None = None
    setting_depth: Positive | None = None
    min_intake_pressure: Annotated[float, Field(ge=0, le=10_000)] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> Equipment:
        for low, high in (("pump_min_flow", "pump_max_flow"), ("vsd_min_hz", "vsd_max_hz")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"{low} must be below {high}")
        return self

    def known(self) -> dict[str, float]:
        """The attributes that are set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


