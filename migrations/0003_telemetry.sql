-- Stored readings: one value per row, keyed by catalog ids (devices.id, metrics.id).
--
-- No foreign keys to devices/metrics on purpose: they cost insert speed on the hottest
-- tables, and the ingestor only writes ids it has just resolved from the catalogs.
--
-- Unique on (device, metric, time): a redelivered message inserts nothing new
-- (at-least-once delivery, exactly-once storage; docs/architecture.md). The key includes the
-- time column, as TimescaleDB requires, and also serves per-device/metric range queries.
-- There is no separate time-only index: on TimescaleDB chunks already prune by time,
-- and every extra index slows the COPY fast path.

CREATE TABLE telemetry (
    time    timestamptz      NOT NULL,
    device  integer          NOT NULL,
    metric  smallint         NOT NULL,
    value   double precision NOT NULL,
    quality smallint,
    CONSTRAINT telemetry_device_metric_time_key UNIQUE (device, metric, time)
);

-- Strings and other non-numeric values: same shape, low volume.
CREATE TABLE telemetry_text (
    time    timestamptz NOT NULL,
    device  integer     NOT NULL,
    metric  smallint    NOT NULL,
    value   text        NOT NULL,
    quality smallint,
    CONSTRAINT telemetry_text_device_metric_time_key UNIQUE (device, metric, time)
);

-- The newest reading per (device, metric) by event time. Writers upsert with
-- "ON CONFLICT DO UPDATE ... WHERE excluded.time > telemetry_latest.time", so a late
-- reading never replaces a newer one. Small and update-heavy: a plain table always.
CREATE TABLE telemetry_latest (
    device     integer     NOT NULL,
    metric     smallint    NOT NULL,
    time       timestamptz NOT NULL,
    value      double precision,  -- numeric readings
    value_text text,              -- non-numeric readings
    quality    smallint,
    PRIMARY KEY (device, metric)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;  -- plain PostgreSQL: the tables above are all there is
    END IF;

    -- One-day chunks for the high-volume table; text values are sparse, so weekly chunks.
    -- No default time index (see above).
    PERFORM create_hypertable('telemetry', by_range('time', INTERVAL '1 day'),
                              create_default_indexes => false);
    PERFORM create_hypertable('telemetry_text', by_range('time', INTERVAL '7 days'),
                              create_default_indexes => false);

    -- Compress by series: each (device, metric) is one segment, ordered newest first.
    -- Readings older than a week are rarely rewritten (backlogs arrive sooner).
    ALTER TABLE telemetry SET (timescaledb.compress,
                               timescaledb.compress_segmentby = 'device, metric',
                               timescaledb.compress_orderby = 'time DESC');
    ALTER TABLE telemetry_text SET (timescaledb.compress,
                                    timescaledb.compress_segmentby = 'device, metric',
                                    timescaledb.compress_orderby = 'time DESC');
    PERFORM add_compression_policy('telemetry', INTERVAL '7 days');
    PERFORM add_compression_policy('telemetry_text', INTERVAL '7 days');

    -- Raw history is kept for a year; the rollups (0004) outlive it. To change:
    -- remove_retention_policy() then add_retention_policy() with the new interval.
    PERFORM add_retention_policy('telemetry', INTERVAL '365 days');
    PERFORM add_retention_policy('telemetry_text', INTERVAL '365 days');
END
$$;
