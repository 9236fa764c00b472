-- Readings retention on TimescaleDB drops whole chunks of expired readings, and the series
-- catalog's figures (reading count, first and last reading time) must change in the same
-- transaction. TimescaleDB's own retention policy drops chunks and nothing else, so the service
-- schedules this procedure as a TimescaleDB job instead (storage/readings_retention.py), or calls
-- it itself where the edition has no job scheduler. config: {"drop_after": "<interval>"}.
--
-- It drops the chunks that drop_chunks would drop for that age, which hold only expired
-- readings: it locks them first, so no stream writes into them between counting and dropping,
-- subtracts what each series loses, and drops them. Elsewhere this migration changes nothing.
DO $migration$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE PROCEDURE expire_readings(job_id integer, config jsonb)
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
        END
        $procedure$;
    END IF;
END
$migration$;
