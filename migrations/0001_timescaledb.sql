-- Decide, once per database, whether this is TimescaleDB or plain PostgreSQL.
--
-- Production runs TimescaleDB; development and CI machines have plain PostgreSQL 15
-- (docs/architecture.md, "Database"). Every later migration branches on whether the extension is installed
-- in this database (pg_extension), so the decision made here is followed consistently.
--
-- TimescaleDB is used when it is already installed here (e.g. a managed service), or
-- when it is available AND loaded through shared_preload_libraries: the extension
-- files can be present without the library being preloaded, and then
-- CREATE EXTENSION fails, so "available" alone is not enough.
DO $$
DECLARE
    available boolean := EXISTS (SELECT FROM pg_available_extensions
                                  WHERE name = 'timescaledb');
    preloaded boolean := 'timescaledb' = ANY (
        regexp_split_to_array(current_setting('shared_preload_libraries'), '[\s,"]+'));
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    ELSIF available AND preloaded THEN
        CREATE EXTENSION timescaledb;
    ELSIF available THEN
        RAISE NOTICE 'TimescaleDB is installed but not in shared_preload_libraries: '
                     'using plain PostgreSQL tables and views';
    ELSE
        RAISE NOTICE 'TimescaleDB is not available: using plain PostgreSQL tables and views';
    END IF;
END
$$;
