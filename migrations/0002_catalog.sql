-- Catalogs mapping names to small integer ids. Telemetry rows carry the ids, which
-- keeps them narrow and fast to write and compress (docs/architecture.md, "Database").

-- Device ids and metric names follow the MQTT contract (docs/payloads.md): they appear in
-- topics, so never '+', '#' or '/'.
CREATE TABLE devices (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id         text        NOT NULL UNIQUE
                      CONSTRAINT devices_device_id_format
                      CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    name              text,
    device_type       text        NOT NULL DEFAULT 'esp',
    metadata          jsonb       NOT NULL DEFAULT '{}',
    status            text        NOT NULL DEFAULT 'unknown'
                      CONSTRAINT devices_status_valid
                      CHECK (status IN ('unknown', 'online', 'offline')),
    status_changed_at timestamptz,  -- event time of the status, so an older message never wins
    last_seen         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- smallint ids: tens of thousands of metric names is far more than any fleet has.
CREATE TABLE metrics (
    id         smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE
               CONSTRAINT metrics_name_format
               CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    unit       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
