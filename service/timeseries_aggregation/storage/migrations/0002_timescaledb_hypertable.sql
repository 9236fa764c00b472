-- Where the server offers TimescaleDB (installed and preloaded), enable it and turn readings
-- into a hypertable partitioned by time. On plain PostgreSQL this migration changes nothing:
-- the primary key index (series_id, time) serves the same queries.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable(
            'readings', 'time',
            chunk_time_interval => INTERVAL '7 days',
            if_not_exists => TRUE,
            migrate_data => TRUE
        );
    END IF;
END
$$;
