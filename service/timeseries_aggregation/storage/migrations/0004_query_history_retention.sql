-- Expired history entries are removed continuously (storage/history_retention.py).
-- Where TimescaleDB is enabled (0002), query_history becomes a hypertable on query_time with
-- one-day chunks, which a retention policy drops whole. Hypertables need the time column in
-- every unique key, so the key becomes (id, query_time); ids stay unique (an identity column
-- always generates them), keep their values, and history pages are still read by id, with
-- the key's index in each chunk. Existing entries move into chunks within this migration.
-- On plain PostgreSQL, an index on query_time lets the service find the oldest entries.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        ALTER TABLE query_history DROP CONSTRAINT query_history_pkey, ADD PRIMARY KEY (id, query_time);
        PERFORM create_hypertable(
            'query_history', 'query_time',
            chunk_time_interval => INTERVAL '1 day',
            create_default_indexes => FALSE,
            migrate_data => TRUE
        );
    ELSE
        CREATE INDEX query_history_query_time ON query_history (query_time);
    END IF;
END
$$;
