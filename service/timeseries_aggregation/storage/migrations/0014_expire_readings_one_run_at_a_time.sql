-- Runs of the TimescaleDB job that expires readings (expire_readings, 0010) take turns. The
-- scheduler may start a run while another is under way (a run late on its schedule, or one an
-- operator started with run_job): the later one listed chunks the earlier one then dropped, and
-- failed on them. Each run now waits, on a lock of its transaction, for the one before it to
-- commit, and then lists the chunks that are left. Elsewhere this migration changes nothing.
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
            -- One run at a time: a run started while another drops chunks would find them gone
            -- (or subtract what they held from the catalog twice).
            PERFORM pg_advisory_xact_lock(hashtext('timeseries_aggregation.expire_readings'));
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
