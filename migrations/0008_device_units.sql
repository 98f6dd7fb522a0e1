-- Units (docs/payloads.md): the ingestor stores every value of a known ESP metric in that
-- metric's canonical unit, converting at ingest. Fleets mix units (one bridge sends kPa
-- and degF, another psi and degC), so the unit is kept per (device, metric): the one
-- the device last gave, which is also the unit of its later readings that carry none.
-- Idempotent: running it again changes nothing. A plain table on TimescaleDB too (small,
-- one row per device and metric, updated only when a device changes units).

CREATE TABLE IF NOT EXISTS device_units (
    device     integer     NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric     smallint    NOT NULL REFERENCES metrics (id) ON DELETE CASCADE,
    unit       text        NOT NULL,  -- as the device spelled it (`°F`, `kPa`, ...)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device, metric)
);

-- The catalog's unit of a known metric is its canonical unit (what is stored), whatever
-- unit its first reading happened to carry. Kept equal to CANONICAL in shared/units.py
-- (tests/shared/test_migrate.py checks); the ingestor catalogues new known metrics with
-- it. Telemetry stored before this migration stays as it was sent.
UPDATE metrics AS m
   SET unit = c.unit
  FROM (VALUES ('flow_rate', 'bbl/d'),
               ('pip', 'psi'),
               ('discharge_pressure', 'psi'),
               ('wellhead_pressure', 'psi'),
               ('motor_current', 'A'),
               ('motor_voltage', 'V'),
               ('motor_temp', 'degC'),
               ('intake_temp', 'degC'),
               ('vibration', 'mm/s'),
               ('vsd_frequency', 'Hz'),
               ('gor', 'scf/bbl'),
               ('power', 'kW')) AS c (name, unit)
 WHERE m.name = c.name
   AND m.unit IS DISTINCT FROM c.unit;
