"""TimescaleDB policies (retention, compression): which are set, and keeping them in step."""

import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from timeseries_aggregation.storage.database import Database

logger = logging.getLogger(__name__)

# The setting named $3 of the config, and the schedule, of each policy job $1 on hypertable $2.
_POLICY_JOBS = """
    SELECT (config ->> $3)::interval AS setting, schedule_interval
    FROM timescaledb_information.jobs
    WHERE proc_name = $1 AND hypertable_schema = current_schema() AND hypertable_name = $2
"""


async def policy_jobs(
    connection: asyncpg.Connection, proc_name: str, hypertable: str, setting: str
) -> list[tuple[timedelta, timedelta]]:
    """(the policy's setting, its schedule) of each `proc_name` job on the hypertable."""
    rows = await connection.fetch(_POLICY_JOBS, proc_name, hypertable, setting)
    return [(row["setting"], row["schedule_interval"]) for row in rows]


@dataclass(frozen=True, slots=True)
class PolicyKind:
    """A kind of TimescaleDB policy acting on chunks older than an age."""

    proc_name: str
    # The age's name, both in the job's config and as the add function's argument.
    setting: str
    add_function: str
    remove_function: str


COMPRESSION_POLICY = PolicyKind(
    "policy_compression", "compress_after", "add_compression_policy", "remove_compression_policy"
)
RETENTION_POLICY = PolicyKind(
    "policy_retention", "drop_after", "add_retention_policy", "remove_retention_policy"
)


async def keep_policy(
    connection: asyncpg.Connection, kind: PolicyKind, hypertable: str, age: timedelta
) -> bool:
    """Make the hypertable's policy of this kind act at `age` (zero: none); returns whether it changed."""
    jobs = await policy_jobs(connection, kind.proc_name, hypertable, kind.setting)
    if [setting for setting, _ in jobs] == ([age] if age else []):
        return False
    if jobs:
        await connection.execute(f"SELECT {kind.remove_function}($1::regclass)", hypertable)
    if age:
        await connection.execute(
            f"SELECT {kind.add_function}($1::regclass, {kind.setting} => $2::interval)", hypertable, age
        )
    return True


async def drop_expired_chunks(database: Database, hypertable: str, age: timedelta, lock_key: int) -> None:
    """Drop the hypertable's chunks holding only rows older than `age`, one replica at a time:
    the retention policy's work, where the edition has no policies."""
    async with database.query_connection() as connection, connection.transaction():
        if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key):
            return
        dropped = await connection.fetchval(
            "SELECT count(*) FROM drop_chunks($1::regclass, older_than => $2::interval)", hypertable, age
        )
    logger.debug("%s: dropped %d expired chunks", hypertable, dropped)
