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
-- The database enforces it with a statement trigger on readings, so no build can slip past it:
-- before each INSERT, COPY, UPDATE or DELETE statement (not each row) it compares the session's
-- declaration with the contract required, and refuses the statement, before anything is
-- written, with SQLSTATE 55W01. Citus runs the trigger on the shards, in sessions of its own,
-- which learn this build's declaration from the SET LOCAL it sends in each write transaction.
--
-- The required contract is the body of timeseries_required_writer_contract(): a migration that
-- changes what writers must maintain raises it, and `timeseries-aggregation schema
-- allow-older-writers` lowers it for a rollback (README, Upgrading).
CREATE OR REPLACE FUNCTION timeseries_required_writer_contract() RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT 1 $$;

CREATE OR REPLACE FUNCTION timeseries_writer_gate() RETURNS trigger
LANGUAGE plpgsql AS $$
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

-- Citus refuses triggers on distributed tables unless told that this one is safe: it only reads
-- a setting and raises. (Elsewhere the setting is an unused placeholder.) Creating the trigger
-- waits for the writes under way to end: every later one meets it.
-- Run as a statement of its own (EXECUTE): Citus sends a trigger's creation on to the shards as
-- the text of the statement it came in, and a migration comes in as many statements.
SET LOCAL citus.enable_unsafe_triggers = on;
DO $$
BEGIN
    EXECUTE 'DROP TRIGGER IF EXISTS readings_writer_gate ON readings';
    EXECUTE 'CREATE TRIGGER readings_writer_gate BEFORE INSERT OR UPDATE OR DELETE ON readings '
        'FOR EACH STATEMENT EXECUTE FUNCTION timeseries_writer_gate()';
END
$$;
