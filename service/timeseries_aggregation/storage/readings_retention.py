"""Readings retention (off by default): readings older than the setting are removed while the server runs.

Where readings is a TimescaleDB hypertable, whole chunks are dropped: by a TimescaleDB retention
policy that the service keeps in step with its setting at start-up or, under the Apache-2-only
edition that has no policies, by a task calling drop_chunks. On plain PostgreSQL the task deletes
expired readings a few meters at a time, each meter's through the primary key (series_id, time).
"""

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from timeseries_aggregation.domain.durations import format_duration
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.policies import (
    RETENTION_POLICY,
    drop_expired_chunks,
    keep_policy,
    policies_available,
)
from timeseries_aggregation.storage.rounds import rounds_running

logger = logging.getLogger(__name__)

# Readings expire by the day: an hourly round is ample, and a failed one is retried an hour on.
ROUND_INTERVAL_SECONDS = 3600.0
# Meters per DELETE: a backlog of a year of quarter-hourly readings is then some 700,000 rows
# per statement, seconds of work, well within the statement timeout.
METERS_PER_BATCH = 20
# Serialises replicas: one at a time changes the policy or removes readings; any shared number.
_RETENTION_LOCK_KEY = 0x7453_616A

# The next meters after $1 in key order, found through the primary key's index one meter at a
# time (a loose index scan) instead of reading every row.
_NEXT_METERS = """
    WITH RECURSIVE meters (series_id, position) AS (
        (SELECT series_id, 1 FROM readings WHERE series_id > $1 ORDER BY series_id LIMIT 1)
        UNION ALL
        SELECT (SELECT next.series_id FROM readings AS next
                WHERE next.series_id > meters.series_id ORDER BY next.series_id LIMIT 1),
               meters.position + 1
        FROM meters
        WHERE meters.series_id IS NOT NULL AND meters.position < $2
    )
    SELECT series_id FROM meters WHERE series_id IS NOT NULL
"""
# Citus plans no recursive query over a distributed table; there each worker lists its own
# meters in parallel, and the coordinator merges them.
_NEXT_METERS_DISTRIBUTED = """
    SELECT DISTINCT series_id FROM readings WHERE series_id > $1 ORDER BY series_id LIMIT $2
"""
_DELETE_EXPIRED = "DELETE FROM readings WHERE series_id = ANY($1::text[]) AND time < now() - $2::interval"


async def delete_expired_readings(
    database: Database, retention: timedelta, meters_per_batch: int = METERS_PER_BATCH
) -> int:
    """Delete the readings older than the retention, a batch of meters at a time; returns how many."""
    deleted = 0
    async with database.query_connection() as connection:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK_KEY):
            return 0
        try:
            after = ""  # series ids are never empty
            next_meters = _NEXT_METERS_DISTRIBUTED if database.citus_workers else _NEXT_METERS
            while True:
                meters = [
                    row["series_id"] for row in await connection.fetch(next_meters, after, meters_per_batch)
                ]
                if meters:
                    status: str = await connection.execute(_DELETE_EXPIRED, meters, retention)
                    deleted += int(status.removeprefix("DELETE "))
                if len(meters) < meters_per_batch:
                    break
                after = meters[-1]
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK_KEY)
    logger.debug("readings retention: deleted %d expired readings", deleted)
    return deleted


async def _keep_policy_in_step(database: Database, retention: timedelta) -> bool:
    """Make the retention policy on readings match the setting; False where there are no policies."""
    async with database.query_connection() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _RETENTION_LOCK_KEY)
        if not await policies_available(connection):
            return False
        await keep_policy(connection, RETENTION_POLICY, "readings", retention)
        return True


@contextlib.asynccontextmanager
async def readings_retention(
    database: Database,
    retention: timedelta,
    *,
    round_interval_seconds: float = ROUND_INTERVAL_SECONDS,
    meters_per_batch: int = METERS_PER_BATCH,
) -> AsyncIterator[None]:
    """Keep readings for `retention` (zero: forever) while the block runs."""
    policy = database.timescaledb and await _keep_policy_in_step(database, retention)
    if not retention:
        logger.info("readings retention: off, readings are kept forever")
        yield
        return
    if policy:
        logger.info(
            "readings retention: chunks older than %s are dropped by a TimescaleDB retention policy",
            format_duration(retention),
        )
        yield
        return

    async def remove_expired() -> None:
        if database.timescaledb:
            await drop_expired_chunks(database, "readings", retention, _RETENTION_LOCK_KEY)
        else:
            await delete_expired_readings(database, retention, meters_per_batch)

    logger.info(
        "readings retention: readings older than %s are removed every %g s by %s",
        format_duration(retention),
        round_interval_seconds,
        "drop_chunks" if database.timescaledb else "deletes through the primary key",
    )
    async with rounds_running(
        remove_expired, round_interval_seconds, logger, "readings retention: removing expired readings"
    ):
        yield
