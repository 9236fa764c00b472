"""Readings retention (off by default): readings older than the setting are removed while the server runs.

Every removal changes the series catalog's figures of the series it touches in its own
transaction. Where readings is a TimescaleDB hypertable, whole chunks are dropped by the
procedure expire_readings (migration 0008), which TimescaleDB's job scheduler runs as a job the
service keeps in step with its setting at start-up, or, under the Apache-2-only edition that has
no scheduler, a task of the service calls. Elsewhere (plain PostgreSQL, Citus) the task deletes
the expired readings of one meter at a time through the primary key (series_id, time); the
catalog says which meters hold any.
"""

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from timeseries_aggregation.domain.durations import format_duration
from timeseries_aggregation.domain.readings import EARLIEST_TIME
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.policies import RETENTION_POLICY, keep_policy
from timeseries_aggregation.storage.rounds import rounds_running
from timeseries_aggregation.storage.series_catalog import account_deletions, delete_series_ranges
from timeseries_aggregation.storage.series_locks import lock_for_deletion

logger = logging.getLogger(__name__)

# Readings expire by the day: an hourly round is ample, and a failed one is retried an hour on.
ROUND_INTERVAL_SECONDS = 3600.0
# Meters whose expired readings one transaction deletes: a backlog of a year of quarter-hourly
# readings is then some 700,000 rows per transaction, seconds of work.
METERS_PER_BATCH = 20
# Serialises replicas: one at a time changes the job or removes readings; any shared number.
_RETENTION_LOCK_KEY = 0x7453_616A

# The next meters after $2 in key order whose first reading is older than the cutoff $1.
_EXPIRING_METERS = """
    SELECT series_id FROM series
    WHERE first_reading_time < $1 AND series_id > $2
    ORDER BY series_id
    LIMIT $3
"""
_EXPIRY_JOBS = """
    SELECT job_id, (config ->> 'drop_after')::interval AS drop_after
    FROM timescaledb_information.jobs
    WHERE proc_schema = current_schema() AND proc_name = 'expire_readings'
"""
_ADD_EXPIRY_JOB = """
    SELECT add_job(
        'expire_readings', INTERVAL '1 hour', config => jsonb_build_object('drop_after', $1::interval)
    )
"""


async def delete_expired_readings(
    database: Database, retention: timedelta, meters_per_batch: int = METERS_PER_BATCH
) -> int:
    """Delete the readings older than the retention, a batch of meters at a time; returns how many."""
    deleted = 0
    async with database.query_connection() as connection:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK_KEY):
            return 0
        try:
            cutoff = await connection.fetchval("SELECT now() - $1::interval", retention)
            after = ""  # series ids are never empty
            while True:
                rows = await connection.fetch(_EXPIRING_METERS, cutoff, after, meters_per_batch)
                meters = [row["series_id"] for row in rows]
                async with connection.transaction():
                    await lock_for_deletion(connection, meters)
                    expired = await delete_series_ranges(
                        connection, meters, EARLIEST_TIME, cutoff, database.capabilities.distributed
                    )
                    await account_deletions(connection, expired, EARLIEST_TIME, cutoff)
                deleted += sum(expired.values())
                if len(meters) < meters_per_batch:
                    break
                after = meters[-1]
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK_KEY)
    logger.debug("readings retention: deleted %d expired readings", deleted)
    return deleted


async def expire_chunks_now(database: Database, retention: timedelta) -> None:
    """What the TimescaleDB job does, where the edition has no job scheduler."""
    async with database.query_connection() as connection, connection.transaction():
        if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RETENTION_LOCK_KEY):
            return
        config = json.dumps({"drop_after": f"{int(retention.total_seconds())} seconds"})
        await connection.execute("CALL expire_readings(0, $1::jsonb)", config)


async def _keep_job_in_step(database: Database, retention: timedelta) -> None:
    """Make the expiry job of readings match the setting (the database has a job scheduler)."""
    async with database.query_connection() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _RETENTION_LOCK_KEY)
        # Earlier versions used TimescaleDB's retention policy, which leaves the catalog behind.
        await keep_policy(connection, RETENTION_POLICY, "readings", timedelta(0))
        jobs = await connection.fetch(_EXPIRY_JOBS)
        if [job["drop_after"] for job in jobs] == ([retention] if retention else []):
            return
        for job in jobs:
            await connection.execute("SELECT delete_job($1)", job["job_id"])
        if retention:
            await connection.execute(_ADD_EXPIRY_JOB, retention)


@contextlib.asynccontextmanager
async def readings_retention(
    database: Database,
    retention: timedelta,
    *,
    round_interval_seconds: float = ROUND_INTERVAL_SECONDS,
    meters_per_batch: int = METERS_PER_BATCH,
) -> AsyncIterator[None]:
    """Keep readings for `retention` (zero: forever) while the block runs."""
    scheduled = database.capabilities.job_scheduler
    if scheduled:
        await _keep_job_in_step(database, retention)
    if not retention:
        logger.info("readings retention: off, readings are kept forever")
        yield
        return
    if scheduled:
        logger.info(
            "readings retention: chunks older than %s are dropped by a TimescaleDB job, hourly",
            format_duration(retention),
        )
        yield
        return

    async def remove_expired() -> None:
        if database.capabilities.hypertables:
            await expire_chunks_now(database, retention)
        else:
            await delete_expired_readings(database, retention, meters_per_batch)

    logger.info(
        "readings retention: readings older than %s are removed every %g s by %s",
        format_duration(retention),
        round_interval_seconds,
        "drop_chunks" if database.capabilities.hypertables else "deletes through the primary key",
    )
    async with rounds_running(
        remove_expired, round_interval_seconds, logger, "readings retention: removing expired readings"
    ):
        yield
