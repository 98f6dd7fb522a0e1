-- Diagnostics service (docs/architecture.md, "Diagnostics"): diagnosis events, the
-- diagnoses open now, how far each device has been judged, and thresholds as data.

-- Every raise, change and clear, as emitted. A row is written in the same transaction
-- that moves the device's progress past the reading that caused it, so a restart never
-- emits it again; `published_at` is set once it is on insa:diagnostics and MQTT (an
-- outbox: what a crash left unpublished is published at the next start).
CREATE TABLE diagnoses (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    text        NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    ts           timestamptz NOT NULL,  -- the reading that caused the event
    code         text        NOT NULL
                 CONSTRAINT diagnoses_code_known CHECK (code IN (
                     'gas_lock', 'pump_off', 'broken_shaft', 'closed_valve', 'overload',
                     'underload', 'overheating', 'bearing_wear', 'vsd_out_of_range',
                     'sensor_fault', 'anomaly')),
    metric       text,                  -- per-sensor codes (sensor_fault, anomaly)
    severity     text        NOT NULL
                 CONSTRAINT diagnoses_severity_valid
                 CHECK (severity IN ('info', 'warning', 'critical')),
    cleared      boolean     NOT NULL,
    confidence   real        NOT NULL
                 CONSTRAINT diagnoses_confidence_range CHECK (confidence BETWEEN 0 AND 1),
    evidence     jsonb       NOT NULL DEFAULT '{}',
    action       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX diagnoses_device_ts_idx ON diagnoses (device_id, ts DESC);
CREATE INDEX diagnoses_unpublished_idx ON diagnoses (id) WHERE published_at IS NULL;

-- What is diagnosed now, per device: raised or changed rows upsert, a clear deletes.
-- A restarted engine continues from these instead of raising them again.
CREATE TABLE open_diagnoses (
    device_id    text        NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    code         text        NOT NULL,
    metric       text        NOT NULL DEFAULT '',  -- '' for whole-well codes
    severity     text        NOT NULL,
    confidence   real        NOT NULL,
    evidence     jsonb       NOT NULL DEFAULT '{}',
    since        timestamptz NOT NULL,
    diagnosis_id bigint      NOT NULL,
    PRIMARY KEY (device_id, code, metric)
);

-- The newest reading judged per device: older ones (the stream redelivering what was
-- judged before a crash) are skipped, and a restart replays stored telemetry up to here
-- to rebuild the engine's state without emitting anything.
CREATE TABLE diagnostics_progress (
    device_id text        PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    last_ts   timestamptz NOT NULL
);

-- Overrides of the engine's limits (services/diagnostics/limits.py): a row with neither
-- key holds fleet defaults, one with device_type that type's, one with device_id that
-- device's. `limits` is a JSON object of the same shape as the defaults, any subset.
CREATE TABLE diagnosis_limits (
    id          integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_type text,
    device_id   text        REFERENCES devices (device_id) ON DELETE CASCADE,
    limits      jsonb       NOT NULL
                CONSTRAINT diagnosis_limits_object CHECK (jsonb_typeof(limits) = 'object'),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT diagnosis_limits_one_scope CHECK (device_type IS NULL OR device_id IS NULL),
    CONSTRAINT diagnosis_limits_scope_unique UNIQUE NULLS NOT DISTINCT (device_type, device_id)
);
