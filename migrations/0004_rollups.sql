-- Per-minute and per-hour rollups of numeric telemetry, same names and columns either way:
--   TimescaleDB: continuous aggregates with refresh policies. materialized_only = false
--                (real-time aggregation) adds not-yet-materialized recent rows, so a
--                query sees the same answer as the plain view would.
--   PostgreSQL:  ordinary views computing the buckets on read; date_bin() with
--                time_bucket()'s default origin (Monday 2000-01-03 UTC) gives equal buckets.
-- Both rollups read raw telemetry (averaging per-minute averages would be wrong).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- WITH NO DATA: creating with data cannot run inside a transaction (the
        -- migration runner's); the refresh policies fill them in the background.
        CREATE MATERIALIZED VIEW telemetry_1m
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, device, metric,
               avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
          FROM telemetry
         GROUP BY 1, 2, 3
          WITH NO DATA;

        CREATE MATERIALIZED VIEW telemetry_1h
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, device, metric,
               avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
          FROM telemetry
         GROUP BY 1, 2, 3
          WITH NO DATA;

        -- Re-materialize the last week (store-and-forward backlogs arrive late); only
        -- ranges invalidated by new rows are recomputed, so a wide window stays cheap.
        -- Readings that arrive more than a week late are stored raw but reach the
        -- rollups only through a manual CALL refresh_continuous_aggregate(...).
        -- The window stays well inside raw retention (0003), so dropped raw chunks
        -- never erase rollup rows.
        PERFORM add_continuous_aggregate_policy('telemetry_1m',
            start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 minute',
            schedule_interval => INTERVAL '1 minute');
        PERFORM add_continuous_aggregate_policy('telemetry_1h',
            start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '15 minutes');
    ELSE
        CREATE VIEW telemetry_1m AS
        SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-03 00:00:00+00')
                   AS bucket,
               device, metric,
               avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
          FROM telemetry
         GROUP BY 1, 2, 3;

        CREATE VIEW telemetry_1h AS
        SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00')
                   AS bucket,
               device, metric,
               avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
          FROM telemetry
         GROUP BY 1, 2, 3;
    END IF;
END
$$;
