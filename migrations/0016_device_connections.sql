-- Each device's connection history: one row per change of `devices.status`, written by the
-- ingestor in the transaction that changes the status, and only when it actually changes
-- (online -> online is no row). `devices` keeps the current status only; this is what the
-- console's well page shows as "Connection history".
--
-- An ordinary table on TimescaleDB too: small (a few rows per device a day), and
-- bounded per device instead of by time: the ingestor keeps each device's newest
-- CONNECTIONS_KEPT rows (services/ingestor/repository.py, 500) and deletes older ones
-- as it writes, so a device that flaps for days holds no more than that, and a quiet
-- device keeps its history as long as it has one. Deleted with its device.

CREATE TABLE device_connections (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device      integer     NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    ts          timestamptz NOT NULL,  -- event time of the status (as status_changed_at)
    status      text        NOT NULL
                CONSTRAINT device_connections_status_valid
                CHECK (status IN ('online', 'offline')),
    previous    text        NOT NULL,  -- the status it changed from (unknown at first)
    -- What said so: the device's own status message or Last Will (`device`), its gateway
    -- (`gateway`: a child's status, or the gateway's Will for all its children), a
    -- Sparkplug birth or death (`sparkplug`), telemetry from a device not online
    -- (`telemetry`), or the ingestor's inactivity sweep (`timeout`).
    source      text        NOT NULL
                CONSTRAINT device_connections_source_valid
                CHECK (source IN ('device', 'gateway', 'sparkplug', 'telemetry', 'timeout')),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- A device's history newest first (the page, its "older" link, and the pruning).
CREATE INDEX device_connections_device_idx ON device_connections (device, id DESC);
