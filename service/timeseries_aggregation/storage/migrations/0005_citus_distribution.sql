-- Where the database is a Citus coordinator with active workers (the citus extension created
-- and the nodes registered in this database), readings are spread over the workers: a
-- distributed table sharded by series_id, so each series' readings live on one worker, a
-- query (always for one series) runs on that worker alone, and ingest spreads over all.
-- Elsewhere this migration changes nothing. TimescaleDB and Citus are never combined: 0002
-- enables TimescaleDB only where it is preloaded, which Citus nodes do not do.
--
-- query_history and schema_migrations stay plain tables on the coordinator. Each history
-- entry is written by the query's own statement and history pages are read newest-first by
-- id across all series: one local table keeps its identity ids, that ordering and the batched
-- retention deletes as they are, where a distributed table would ask every shard for each page
-- and a reference table would replicate every query's entry to every node. schema_migrations
-- is only ever read and written by the coordinator running the migrations.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        IF EXISTS (SELECT 1 FROM citus_get_active_worker_nodes()) THEN
            PERFORM create_distributed_table('readings', 'series_id');
        END IF;
    END IF;
END
$$;
