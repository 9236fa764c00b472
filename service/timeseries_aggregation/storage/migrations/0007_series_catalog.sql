-- The series catalog: one row per meter, with its labels, its declared reading interval, and
-- figures of its readings (first and last reading time, reading count) that the ingest and
-- deletion transactions keep exact, so listing series never reads the readings.
--
-- Series are listed in code point order (COLLATE "C") on every server, whatever the database's
-- collation, so pages come in the same order on every engine; an index serves that order. (The
-- column itself keeps the collation of readings.series_id: Citus co-locates tables only when
-- their distribution columns agree in type and collation.) Labels are a jsonb object;
-- selectors match them with @>, which the GIN index answers.
--
-- On Citus the catalog is distributed by series_id and co-located with readings: a series' row
-- lives on the worker holding its readings, so ingest updates it there, in the same shard
-- transaction. Meters already stored get their row from the readings, once, here.
CREATE TABLE series (
    series_id text PRIMARY KEY,
    labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    reading_interval_seconds integer,
    first_reading_time timestamptz,
    last_reading_time timestamptz,
    reading_count bigint NOT NULL DEFAULT 0 CHECK (reading_count >= 0)
);
CREATE INDEX series_in_code_point_order ON series ((series_id COLLATE "C"));
CREATE INDEX series_labels ON series USING gin (labels jsonb_path_ops);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'readings'::regclass) THEN
            PERFORM create_distributed_table('series', 'series_id', colocate_with => 'readings');
        END IF;
    END IF;
END
$$;

-- One pass over every stored reading: on a large database longer than a statement may take,
-- so this migration's transaction lifts the limit (replicas starting meanwhile wait for it).
SET LOCAL statement_timeout = 0;
INSERT INTO series (series_id, first_reading_time, last_reading_time, reading_count)
SELECT series_id, min(time), max(time), count(*)
FROM readings
GROUP BY series_id;
