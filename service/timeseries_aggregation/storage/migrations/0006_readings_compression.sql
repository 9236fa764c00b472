-- Older chunks of readings are stored compressed in TimescaleDB's columnstore; the policy that
-- compresses them, and its age, are kept in step with the setting at start-up
-- (storage/compression.py). Compression is part of TimescaleDB's community edition, not of the
-- Apache-2-only one, and not of plain PostgreSQL: there this migration changes nothing.
--
-- Segment by series_id: each compressed batch then holds one meter's readings, which is how
-- every query reads them (one series, a time range), and how a re-sent reading finds the one
-- batch it replaces; the meter's id is stored once per batch instead of once per reading.
-- Order by time: within a batch, consecutive instants 15 minutes or an hour apart compress to
-- almost nothing (delta-of-delta), neighbouring values compress better (Gorilla), and a time
-- range reads only the batches whose minimum and maximum time overlap it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND current_setting('timescaledb.license', true) = 'timescale' THEN
        ALTER TABLE readings SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'series_id',
            timescaledb.compress_orderby = 'time'
        );
    END IF;
END
$$;
