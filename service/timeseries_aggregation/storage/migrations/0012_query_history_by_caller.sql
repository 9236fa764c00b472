-- outside a transaction: index on query_history
-- A caller lists its own history entries (ListQueryHistory without the history-all scope):
-- newest first by id, within its name. This index serves that from the caller's entries
-- alone, however many other callers' entries the table holds.
--
-- The history may hold hundreds of millions of rows, written by every query: the index is built
-- while the table takes writes (storage/schema.py runs this file outside the migration
-- transaction). On plain PostgreSQL and on Citus, where query_history stays a plain table on the
-- coordinator, CONCURRENTLY does that. On TimescaleDB, where query_history is a hypertable
-- (0004) that refuses CONCURRENTLY, each chunk is indexed in a transaction of its own: writes
-- wait only while the chunk they go to (the newest day's) is indexed. IF NOT EXISTS: a build
-- that finished but was not recorded (the replica stopped in between) counts as done.
-- on a plain table:
CREATE INDEX CONCURRENTLY IF NOT EXISTS query_history_by_caller ON query_history (caller_name, id)
-- on a hypertable:
CREATE INDEX IF NOT EXISTS query_history_by_caller ON query_history (caller_name, id) WITH (timescaledb.transaction_per_chunk)
