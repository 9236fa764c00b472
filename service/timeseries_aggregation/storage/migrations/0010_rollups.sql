-- Rollups: per series, the sum, minimum, maximum and count of its readings in each UTC hour
-- (hourly_rollups) and each UTC day (daily_rollups), for series whose readings come more than
-- one to an hour (series.rolled_up). A query reads them wherever its buckets are made of whole
-- UTC hours or days, and the readings for the rest (storage/rollups.py, README "Rollups").
--
-- The ingest, deletion and retention transactions that change a rolled-up series' readings
-- recompute the rollups of the hours (and days) they touched before they commit, while they
-- hold the series' catalog row: rollups are never behind the readings.
ALTER TABLE series ADD COLUMN rolled_up boolean NOT NULL DEFAULT false;

CREATE TABLE hourly_rollups (
    series_id text NOT NULL,
    bucket_start timestamptz NOT NULL,
    total double precision NOT NULL,
    minimum double precision NOT NULL,
    maximum double precision NOT NULL,
    reading_count bigint NOT NULL,
    PRIMARY KEY (series_id, bucket_start)
);

CREATE TABLE daily_rollups (LIKE hourly_rollups INCLUDING ALL);

DO $$
BEGIN
    -- TimescaleDB: hypertables like readings, with chunks as long in rows as a week of
    -- quarter-hourly readings is (ten weeks of hours, two years of days), so that retention
    -- drops them whole.
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('hourly_rollups', 'bucket_start', chunk_time_interval => INTERVAL '70 days');
        PERFORM create_hypertable('daily_rollups', 'bucket_start', chunk_time_interval => INTERVAL '700 days');
    END IF;
    -- Citus: co-located with readings, so a series' rollups live on the worker holding its
    -- readings and are recomputed from them there.
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'readings'::regclass) THEN
            PERFORM create_distributed_table('hourly_rollups', 'series_id', colocate_with => 'readings');
            PERFORM create_distributed_table('daily_rollups', 'series_id', colocate_with => 'readings');
        END IF;
    END IF;
END
$$;

-- Retention on TimescaleDB (migration 0008) drops the rollups of what it drops: expired chunks
-- end on a chunk boundary of readings, a whole number of weeks, so whole hours and days go.
DO $migration$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE OR REPLACE PROCEDURE expire_readings(job_id integer, config jsonb)
        LANGUAGE plpgsql
        SET search_path FROM CURRENT
        AS $procedure$
        DECLARE
            cutoff timestamptz := now() - (config ->> 'drop_after')::interval;
            expiring text[];
            boundary timestamptz;
            chunk text;
        BEGIN
            SELECT array_agg(format('%I.%I', chunk_schema, chunk_name) ORDER BY range_end), max(range_end)
            INTO expiring, boundary
            FROM timescaledb_information.chunks
            WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
              AND range_end <= cutoff;
            IF boundary IS NULL THEN
                RETURN;
            END IF;
            FOREACH chunk IN ARRAY expiring LOOP
                EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', chunk);
            END LOOP;
            -- Every reading before the boundary is in an expiring chunk: chunks do not overlap.
            WITH lost AS (
                SELECT series_id, count(*) AS readings FROM readings WHERE time < boundary GROUP BY series_id
            )
            UPDATE series SET
                reading_count = series.reading_count - lost.readings,
                first_reading_time = (
                    SELECT min(time) FROM readings AS kept
                    WHERE kept.series_id = series.series_id AND kept.time >= boundary
                ),
                last_reading_time = CASE WHEN series.reading_count = lost.readings THEN NULL
                                         ELSE series.last_reading_time END
            FROM lost
            WHERE series.series_id = lost.series_id;
            PERFORM drop_chunks('readings', older_than => boundary);
            PERFORM drop_chunks('hourly_rollups', older_than => boundary);
            PERFORM drop_chunks('daily_rollups', older_than => boundary);
            DELETE FROM hourly_rollups WHERE bucket_start < boundary;
            -- The day holding the boundary (never, with chunks of whole weeks) is made again from
            -- the hours it keeps.
            DELETE FROM daily_rollups
            WHERE bucket_start < date_bin(INTERVAL '1 day', boundary - INTERVAL '1 microsecond', TIMESTAMPTZ 'epoch') + INTERVAL '1 day';
            INSERT INTO daily_rollups
            SELECT series_id, date_bin(INTERVAL '1 day', bucket_start, TIMESTAMPTZ 'epoch'),
                   sum(total), min(minimum), max(maximum), sum(reading_count)
            FROM hourly_rollups
            WHERE bucket_start < date_bin(INTERVAL '1 day', boundary - INTERVAL '1 microsecond', TIMESTAMPTZ 'epoch') + INTERVAL '1 day'
            GROUP BY 1, 2;
        END
        $procedure$;
    END IF;
END
$migration$;
