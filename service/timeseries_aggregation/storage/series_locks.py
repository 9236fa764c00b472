"""Transaction-scoped advisory locks that order the writers of a series' readings.

A deletion (DeleteReadings, retention) and a stream writing the same series would otherwise
meet on row locks: a stream that rewrote readings in one chunk and comes back to the series in
a later one can need a row the deletion deleted while it waits on the stream's rows. So every
stream takes a shared lock for the series it writes before it writes them, and a deletion an
exclusive one before it deletes: a deletion waits for the streams in flight, and the streams
that come after it wait for it, before anyone holds a row the other needs.

The locks are per bucket of series (a hash of the id), so that a stream of many thousands of
meters holds at most SERIES_LOCK_BUCKETS of them in PostgreSQL's shared lock table; streams
never wait on each other for them, and a deletion may wait for a stream of another series in
its bucket, which costs a rare operation a short wait.

On Citus each stream also takes an exclusive lock per series, in one order, before it writes
the series: a COPY writes to all shards at once, so two streams copying the same new keys
could lock them on two workers in opposite orders; Citus would cancel one as a distributed
deadlock, and the rollback to the savepoint after that cancel left a worker's transaction
aborted now and then. Streams writing a series in common take turns there, and two that would
wait on each other's series are ended by PostgreSQL's own deadlock check (a retryable ABORTED)
before either touches a shard.
"""

from collections.abc import Collection

import asyncpg

SERIES_LOCK_BUCKETS = 64  # a power of two: a bucket is the hash's low bits
_BUCKET_LOCK_CLASS = 7_310_412
_CITUS_SERIES_LOCK_CLASS = 7_310_411

_LOCK = """
SELECT count({function}($1, key))
FROM (SELECT DISTINCT {key} AS key FROM unnest($2::text[]) AS series_id ORDER BY 1) AS keys
"""
_BUCKET = f"hashtext(series_id) & {SERIES_LOCK_BUCKETS - 1}"
_SHARE_BUCKETS = _LOCK.format(function="pg_advisory_xact_lock_shared", key=_BUCKET)
_TAKE_BUCKETS = _LOCK.format(function="pg_advisory_xact_lock", key=_BUCKET)
_TAKE_SERIES = _LOCK.format(function="pg_advisory_xact_lock", key="hashtext(series_id)")


async def lock_for_streaming(
    connection: asyncpg.Connection, series_ids: Collection[str], per_series: bool
) -> None:
    """Take what a stream holds, until it ends, before it writes these series."""
    if series_ids:
        await connection.execute(_SHARE_BUCKETS, _BUCKET_LOCK_CLASS, list(series_ids))
        if per_series:
            await connection.execute(_TAKE_SERIES, _CITUS_SERIES_LOCK_CLASS, list(series_ids))


async def lock_for_deletion(connection: asyncpg.Connection, series_ids: Collection[str]) -> None:
    """Wait for the streams writing these series (and others of their buckets) to end, and keep
    new ones from writing them until the transaction ends."""
    if series_ids:
        await connection.execute(_TAKE_BUCKETS, _BUCKET_LOCK_CLASS, list(series_ids))
