"""Query history retention: expired entries are removed while the server runs.

Where query_history is a TimescaleDB hypertable (migration 0004), a retention policy drops
whole chunks and the service only keeps the policy in step with its setting at start-up.
On plain PostgreSQL a background task deletes expired entries in small batches.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from timeseries_aggregation.domain.durations import format_duration
from timeseries_aggregation.storage.database import Database

logger = logging.getLogger(__name__)

# Time between two rounds of the task; also how soon a failed round is retried.
ROUND_INTERVAL_SECONDS = 60.0
# Entries per DELETE: a few milliseconds of locks on as many rows, nothing else (see README).
BATCH_SIZE = 1_000
# Serialises replicas bringing the TimescaleDB policy in step; any number they share.
_POLICY_LOCK_KEY = 0x7453_6168
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
_IS_HYPERTABLE = """
    SELECT EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables
        WHERE hypertable_schema = current_schema() AND hypertable_name = 'query_history'
    )
"""
_CURRENT_POLICY = """
    SELECT (config ->> 'drop_after')::interval AS drop_after, schedule_interval
    FROM timescaledb_information.jobs
    WHERE proc_name = 'policy_retention'
      AND hypertable_schema = current_schema() AND hypertable_name = 'query_history'
"""


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
            return deleted


async def _delete_continuously(
    database: Database, retention: timedelta, round_interval_seconds: float, batch_size: int
) -> None:
    """A round of deletion per interval, until cancelled; failures are retried the next round."""
    failing = False
    while True:
        try:
            deleted = await delete_expired_history(database, retention, batch_size)
        # Whatever goes wrong here (the database away, a statement timeout), the server must
        # keep serving: report the first failure of a series and try again next round.
        except Exception as error:
            description = f"{type(error).__name__}: {error}"
            logger.debug("history retention: round failed (%s)", description)
            if not failing:
                logger.warning(
                    "history retention: deleting expired entries failed (%s); retrying every %g s",
                    description,
                    round_interval_seconds,
                )
            failing = True
        else:
            if failing:
                logger.info("history retention: deleting expired entries again")
            failing = False
            logger.debug("history retention: deleted %d expired entries", deleted)
        await asyncio.sleep(round_interval_seconds)


async def _keep_policy_in_step(database: Database, retention: timedelta) -> None:
    """Make the TimescaleDB retention policy (and chunk length) match the configured retention."""
    schedule = min(retention, _LONGEST_SCHEDULE)
    async with database.transaction() as connection:
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _POLICY_LOCK_KEY)
        policies = await connection.fetch(_CURRENT_POLICY)
        if retention:
            await connection.execute(
                "SELECT set_chunk_time_interval('query_history', $1::interval)",
                min(retention, _LONGEST_CHUNK),
            )
        if [tuple(policy) for policy in policies] == ([(retention, schedule)] if retention else []):
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
        f"changed to {format_duration(retention)}" if retention else "removed",
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
    hypertable = database.timescaledb and await _is_hypertable(database)
    if hypertable:
        await _keep_policy_in_step(database, retention)
    if not retention:
        logger.info("history retention: off, entries are kept forever")
        yield
        return
    if hypertable:
        logger.info(
            "history retention: TimescaleDB drops chunks older than %s (checked every %s)",
            format_duration(retention),
            format_duration(min(retention, _LONGEST_SCHEDULE)),
        )
        yield
        return
    logger.info(
        "history retention: deleting entries older than %s every %g s, in batches of %d",
        format_duration(retention),
        round_interval_seconds,
        batch_size,
    )
    task = asyncio.create_task(_delete_continuously(database, retention, round_interval_seconds, batch_size))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _is_hypertable(database: Database) -> bool:
    async with database.query_connection() as connection:
        hypertable: bool = await connection.fetchval(_IS_HYPERTABLE)
    return hypertable
