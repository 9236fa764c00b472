"""Query history retention: expired entries are removed while the server runs.

On plain PostgreSQL a background task deletes expired entries in small batches. Where
query_history is a TimescaleDB hypertable (migration 0004), whole chunks are dropped: by a
retention policy, which the service keeps in step with its setting at start-up, or, where
the server's TimescaleDB is the Apache-2-only edition that has no policies, by the task.
"""

import contextlib
import enum
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from timeseries_aggregation.domain.durations import format_duration
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.engine import EngineCapabilities
from timeseries_aggregation.storage.policies import RETENTION_POLICY, drop_expired_chunks, policy_jobs
from timeseries_aggregation.storage.rounds import rounds_running

logger = logging.getLogger(__name__)

# Time between two rounds of the task; also how soon a failed round is retried.
ROUND_INTERVAL_SECONDS = 60.0
# Entries per DELETE: about 10 ms of locks on as many rows, nothing else (see README).
BATCH_SIZE = 1_000
# Serialises replicas changing the policy or dropping chunks; any number they share.
_RETENTION_LOCK_KEY = 0x7453_6168
# Chunks and policy runs no longer than this (or than the retention, if shorter): an entry
# outlives the retention by at most one chunk and one run.
_LONGEST_CHUNK = timedelta(days=1)
_LONGEST_SCHEDULE = timedelta(hours=1)

# The oldest expired entries, locked so that replicas running this at once each take
# other rows (SKIP LOCKED) instead of waiting for each other.
_DELETE_EXPIRED_BATCH = """
    DELETE FROM query_history
    WHERE id IN (
        SELECT id FROM query_history
        WHERE query_time < now() - $1::interval
        ORDER BY query_time
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
"""


class RetentionMethod(enum.Enum):
    """How expired history entries are removed on this database."""

    DELETE_BATCHES = "batched deletes"
    RETENTION_POLICY = "a TimescaleDB retention policy"
    DROP_CHUNKS = "drop_chunks"


def retention_method(capabilities: EngineCapabilities) -> RetentionMethod:
    """The method the database allows: chunks on a hypertable, a policy where policies exist."""
    if not capabilities.history_hypertable:
        return RetentionMethod.DELETE_BATCHES
    return RetentionMethod.RETENTION_POLICY if capabilities.job_scheduler else RetentionMethod.DROP_CHUNKS


async def delete_expired_history(
    database: Database, retention: timedelta, batch_size: int = BATCH_SIZE
) -> int:
    """Delete the entries older than the retention, batch after batch; returns how many."""
    deleted = 0
    while True:
        async with database.query_connection() as connection:
            status: str = await connection.execute(_DELETE_EXPIRED_BATCH, retention, batch_size)
        in_batch = int(status.removeprefix("DELETE "))
        deleted += in_batch
        if in_batch < batch_size:
            logger.debug("history retention: deleted %d expired entries", deleted)
            return deleted


async def _keep_chunks_in_step(database: Database, retention: timedelta, policy: bool) -> None:
    """Make the chunk length, and the retention policy if used, match the configured retention."""
    schedule = min(retention, _LONGEST_SCHEDULE)
    async with database.query_connection() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _RETENTION_LOCK_KEY)
        if retention:
            await connection.execute(
                "SELECT set_chunk_time_interval('query_history', $1::interval)",
                min(retention, _LONGEST_CHUNK),
            )
        if not policy:
            return
        policies = await policy_jobs(
            connection, RETENTION_POLICY.proc_name, "query_history", RETENTION_POLICY.setting
        )
        if policies == ([(retention, schedule)] if retention else []):
            return
        if policies:
            await connection.execute("SELECT remove_retention_policy('query_history')")
        if retention:
            await connection.execute(
                "SELECT add_retention_policy('query_history', drop_after => $1::interval, "
                "schedule_interval => $2::interval)",
                retention,
                schedule,
            )
    logger.info(
        "history retention: TimescaleDB retention policy %s",
        f"set to {format_duration(retention)}" if retention else "removed",
    )


@contextlib.asynccontextmanager
async def history_retention(
    database: Database,
    retention: timedelta,
    *,
    round_interval_seconds: float = ROUND_INTERVAL_SECONDS,
    batch_size: int = BATCH_SIZE,
) -> AsyncIterator[None]:
    """Keep query history entries for `retention` (zero: forever) while the block runs."""
    method = retention_method(database.capabilities)
    if method is not RetentionMethod.DELETE_BATCHES:
        await _keep_chunks_in_step(database, retention, policy=method is RetentionMethod.RETENTION_POLICY)
    if not retention:
        logger.info("history retention: off, entries are kept forever")
        yield
        return
    if method is RetentionMethod.RETENTION_POLICY:
        logger.info(
            "history retention: entries older than %s are dropped by %s, run every %s",
            format_duration(retention),
            method.value,
            format_duration(min(retention, _LONGEST_SCHEDULE)),
        )
        yield
        return

    async def remove_expired() -> None:
        if method is RetentionMethod.DROP_CHUNKS:
            await drop_expired_chunks(database, "query_history", retention, _RETENTION_LOCK_KEY)
        else:
            await delete_expired_history(database, retention, batch_size)

    logger.info(
        "history retention: entries older than %s are removed every %g s by %s",
        format_duration(retention),
        round_interval_seconds,
        method.value,
    )
    async with rounds_running(
        remove_expired, round_interval_seconds, logger, "history retention: removing expired entries"
    ):
        yield
