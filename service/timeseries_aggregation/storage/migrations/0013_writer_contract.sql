-- The schema contract between servers of different versions (storage/writer_contract.py).
--
-- A writer must keep what is derived from the readings in step with them: the series catalog
-- (0007) and the rollups (0010), in the transaction that writes the readings. A server built
-- before either still writes readings without them, and a server that trusts the rollups then
-- answers wrong (an old replica in a rolling deploy, or a rollback). From this migration on,
-- every write to readings must come from a session that declares, in the setting
-- timeseries_aggregation.writer_contract, a contract at least the one the database requires;
-- this build declares 1. Builds from before this migration declare nothing and are refused.
--
-- How the database enforces it, on every engine, without a trigger on the insert path:
-- * Inserts (COPY, INSERT, INSERT ... ON CONFLICT): the column writer_gate is always NULL. Its
--   default calls timeseries_writer_gate(), which raises unless the session declares a
--   sufficient contract; this build's statements name the column (as NULL), so its rows never
--   evaluate the default, while an older build's statements, which name only series_id, time
--   and quantity_kwh, evaluate it for their first row and fail before anything is written. A
--   NULL in the eighth column costs no storage: the row's null bitmap fits in the padding of its
--   header. Adding the column and its default rewrites nothing.
-- * Deletes (DeleteReadings, retention): a statement trigger runs the same check. Citus runs it
--   on the shards, where this build declares its contract with SET LOCAL, which Citus passes on.
--
-- The required contract is the body of timeseries_required_writer_contract(): a migration that
-- changes what writers must maintain raises it, and `timeseries-aggregation schema
-- allow-older-writers` lowers it for a rollback (README, Upgrading).
CREATE OR REPLACE FUNCTION timeseries_required_writer_contract() RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT 1 $$;

CREATE OR REPLACE FUNCTION timeseries_writer_gate() RETURNS smallint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    declared text := current_setting('timeseries_aggregation.writer_contract', true);
    required integer := timeseries_required_writer_contract();
BEGIN
    IF required <= 0 OR (declared ~ '^[0-9]{1,6}$' AND declared::integer >= required) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = '55W01',
        MESSAGE = format(
            'the database requires writers of schema contract %s; this session declares %s',
            required,
            coalesce('contract ' || nullif(declared, ''), 'none (a build from before schema contracts)')
        ),
        DETAIL = format('required contract %s', required),
        HINT = 'upgrade the server that sent this write: an older build would leave the rollups and '
            'the series catalog behind the readings';
END
$$;

CREATE OR REPLACE FUNCTION timeseries_writer_gate_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM timeseries_writer_gate();
    RETURN NULL;
END
$$;

-- Locks readings (ACCESS EXCLUSIVE, for an instant: nothing is rewritten): a write of an older
-- build that is under way finishes first, and every later one meets the gate.
ALTER TABLE readings ADD COLUMN IF NOT EXISTS writer_gate smallint;
ALTER TABLE readings ALTER COLUMN writer_gate SET DEFAULT timeseries_writer_gate();

-- Citus refuses triggers on distributed tables unless told that this one is safe: it only reads
-- a setting and raises. (Elsewhere the setting is an unused placeholder.)
SET LOCAL citus.enable_unsafe_triggers = on;
DROP TRIGGER IF EXISTS readings_writer_gate ON readings;
CREATE TRIGGER readings_writer_gate BEFORE DELETE ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION timeseries_writer_gate_trigger();
