"""The diagnosis codes (the one list: `DIAGNOSIS_CODES` is its keys, in this order) and
what each means to an operator: its name and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contract import CRITICAL, SEVERITIES

__all__ = ["ANOMALY", "CODES", "DIAGNOSIS_CODES", "FAULT_CODES", "SEVERITIES", "action_for"]


@dataclass(frozen=True, slots=True)
class Code:
    name: str
    action: str          # at warning (and info)
    critical_action: str  # at critical


# The statistical code: a reading far outside the well's own range, not a named failure.
ANOMALY = "anomaly"

CODES: dict[str, Code] = {
    "gas_lock": Code(
        "Gas lock",
        "Free gas is degrading the pump: raise the frequency carefully or cycle the pump to "
        "purge gas; check the gas separator and casing vent; consider a gas handler.",
        "The pump is gas locked and not lifting: stop and restart to purge gas before the "
        "motor overheats; review separator and intake depth."),
    "pump_off": Code(
        "Pump-off (fluid level at the intake)",
        "Inflow is below pump capacity: lower the VSD frequency or choke back, and check "
        "the fluid level; consider cycling the pump.",
        "The well is pumped off: lower the frequency now or stop on a timer to let the "
        "level recover; repeated pump-off damages the pump."),
    "broken_shaft": Code(
        "Broken shaft",
        "Motor runs at no-load current while the pump lifts nothing: verify with a "
        "rotation/flow test.",
        "Stop the pump: the shaft or coupling is broken. Plan a pull and workover."),
    "closed_valve": Code(
        "Closed or blocked discharge",
        "Discharge pressure is up while flow falls: check wellhead and flowline valves, "
        "chokes and the check valve.",
        "The pump is dead-heading: open the discharge path or stop the pump now; "
        "dead-heading overheats the motor and pump in minutes."),
    "overload": Code(
        "Motor overload",
        "Motor current is above the well's normal: check for sand, emulsion or viscosity "
        "change, scale, and supply voltage balance.",
        "Motor current is far above normal: reduce frequency or stop before the overload "
        "trip or insulation damage; inspect for a mechanical bind."),
    "underload": Code(
        "Motor underload",
        "Motor current is below the well's normal: check fluid level, gas, and pump wear; "
        "verify the underload trip setting.",
        "Motor current is far below normal: the pump is barely loaded; check for pump-off, "
        "gas or a mechanical failure before it trips."),
    "overheating": Code(
        "Motor overheating",
        "Motor temperature is rising above its normal: check flow past the motor (cooling), "
        "load and voltage balance.",
        "Motor temperature is far above normal: reduce load or stop before insulation "
        "damage; check for loss of flow past the motor."),
    "bearing_wear": Code(
        "Bearing wear / high vibration",
        "Vibration is rising above the well's normal: trend it, check for sand and "
        "operating point far from best efficiency; plan an inspection.",
        "Vibration is severe: reduce frequency or stop to avoid a mechanical failure; plan "
        "a pull."),
    "vsd_out_of_range": Code(
        "VSD frequency out of range",
        "Drive frequency is far from every setpoint this well has run at, or hunting: "
        "check the drive's setpoint and its control loop.",
        "Drive frequency is outside the range the drive is configured for: check the VSD "
        "for a fault and return it to its setpoint."),
    "sensor_fault": Code(
        "Sensor fault",
        "A transmitter reads a stuck, impossible, spiking or drifting value: check its "
        "wiring, power and calibration; diagnoses that need it are unreliable until then.",
        "A transmitter reads a stuck, impossible, spiking or drifting value: check its "
        "wiring, power and calibration; diagnoses that need it are unreliable until then."),
    ANOMALY: Code(
        "Statistical anomaly",
        "A reading is far outside this well's learned range: look at the trend.",
        "A reading is far outside this well's learned range: look at the trend."),
}


DIAGNOSIS_CODES: tuple[str, ...] = tuple(CODES)
FAULT_CODES: tuple[str, ...] = tuple(c for c in DIAGNOSIS_CODES if c != ANOMALY)


def action_for(code: str, severity: str) -> str:
    entry = CODES[code]
    return entry.critical_action if severity == CRITICAL else entry.action
