-- Plain PostgreSQL: the hourly rollup becomes a table kept current on insert, instead of a
-- view that aggregated the raw rows on every read (0004; a 30-day hourly read aggregated
-- 43,000 rows per metric). On TimescaleDB nothing changes: the continuous aggregates of
-- 0004 stay. The per-minute rollup stays a view over the raw rows (0004): a table of it
-- would be as large as the raw table at one reading a minute (measured: 305 MB beside
-- 185 MB raw) and would double the work of every insert, for reads that span hours.
--
-- Per (device, metric, bucket) the table keeps sum, count, min and max, which combine
-- exactly when rows arrive in pieces (an average would not); `telemetry_1h` stays a view
-- with its columns (bucket, device, metric, avg, min, max, count), now over the table, so
-- every reader keeps working and gets avg = sum / count.
--
-- Kept by a statement-level AFTER INSERT trigger on telemetry: its transition table holds
-- exactly the rows the statement inserted, so a COPY counts every row once, and an
-- INSERT ... ON CONFLICT DO NOTHING (the ingestor's redelivery path) only the new ones.
-- A failed COPY (duplicate key) is rolled back with its savepoint, trigger work included.
-- One upsert per statement, in key order, so concurrent writers queue rather than
-- deadlock. Only `telemetry` feeds it: text lives in `telemetry_text` (booleans are
-- stored 1/0 in `telemetry`, as before).
--
-- DELETE does not touch it: raw rows deleted (retention, a clean-up) leave their rollups
-- as they were, as TimescaleDB's continuous aggregates outlive dropped chunks.
-- telemetry_rollup_refresh(start, end) recomputes a range from the raw rows still there,
-- for a correction on purpose (docs/architecture.md, "Database").
DO $migration$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;  -- continuous aggregates (0004)
    END IF;

    -- Writers wait (and none is half-way): the backfill below sees every committed row,
    -- and every later insert finds the trigger.
    LOCK TABLE telemetry IN SHARE ROW EXCLUSIVE MODE;

    -- Keyed like telemetry's unique key, which is how readers ask: one device, some
    -- metrics, a bucket range. fillfactor leaves room on each page so the upserts of a
    -- bucket still filling are HOT updates (no index write, dead rows pruned in place).
    CREATE TABLE telemetry_1h_data (
        device integer          NOT NULL,
        metric smallint         NOT NULL,
        bucket timestamptz      NOT NULL,
        sum    double precision NOT NULL,
        count  bigint           NOT NULL,
        min    double precision NOT NULL,
        max    double precision NOT NULL,
        PRIMARY KEY (device, metric, bucket)
    ) WITH (fillfactor = 80);

    -- date_bin() from Monday 2000-01-03 UTC: time_bucket()'s default origin, as in 0004.
    CREATE FUNCTION telemetry_rollup_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        INSERT INTO telemetry_1h_data AS r (device, metric, bucket, sum, count, min, max)
        SELECT device, metric,
               date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
               sum(value), count(*), min(value), max(value)
          FROM new_rows
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
            ON CONFLICT (device, metric, bucket) DO UPDATE
           SET sum = r.sum + excluded.sum, count = r.count + excluded.count,
               min = least(r.min, excluded.min), max = greatest(r.max, excluded.max);
        RETURN NULL;
    END
    $fn$;

    CREATE TRIGGER telemetry_rollup AFTER INSERT ON telemetry
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION telemetry_rollup_insert();

    -- The buckets touching [start_at, end_at), widened to whole hours, recomputed from the
    -- raw rows there now; returns the rollup rows written. Inserts wait meanwhile (the same
    -- lock as above). A bucket whose raw rows retention already deleted loses its rollup.
    CREATE FUNCTION telemetry_rollup_refresh(start_at timestamptz, end_at timestamptz)
        RETURNS bigint LANGUAGE plpgsql AS $fn$
    DECLARE
        origin constant timestamptz := TIMESTAMPTZ '2000-01-03 00:00:00+00';
        lo constant timestamptz := date_bin(INTERVAL '1 hour', start_at, origin);
        hi constant timestamptz := date_bin(INTERVAL '1 hour', end_at - INTERVAL '1 microsecond',
                                            origin) + INTERVAL '1 hour';
        written bigint;
    BEGIN
        IF end_at <= start_at THEN
            RETURN 0;
        END IF;
        LOCK TABLE telemetry IN SHARE ROW EXCLUSIVE MODE;
        DELETE FROM telemetry_1h_data WHERE bucket >= lo AND bucket < hi;
        INSERT INTO telemetry_1h_data (device, metric, bucket, sum, count, min, max)
        SELECT device, metric, date_bin(INTERVAL '1 hour', time, origin),
               sum(value), count(*), min(value), max(value)
          FROM telemetry WHERE time >= lo AND time < hi
         GROUP BY 1, 2, 3;
        GET DIAGNOSTICS written = ROW_COUNT;
        RETURN written;
    END
    $fn$;

    -- Backfill: what is stored so far.
    INSERT INTO telemetry_1h_data (device, metric, bucket, sum, count, min, max)
    SELECT device, metric,
           date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
           sum(value), count(*), min(value), max(value)
      FROM telemetry GROUP BY 1, 2, 3;

    -- The view's name and columns, as readers know them. (sum / count: count is never 0.)
    DROP VIEW telemetry_1h;
    CREATE VIEW telemetry_1h AS
    SELECT bucket, device, metric, sum / count AS avg, min, max, count FROM telemetry_1h_data;
END
$migration$;
