"""TimescaleDB policies (retention, compression): whether the server has them, and which are set."""

from datetime import timedelta

import asyncpg

# Policies are part of TimescaleDB's community edition, not of the Apache-2-only one.
POLICIES_AVAILABLE = "current_setting('timescaledb.license', true) = 'timescale'"

# The setting named $3 of the config, and the schedule, of each policy job $1 on hypertable $2.
_POLICY_JOBS = """
    SELECT (config ->> $3)::interval AS setting, schedule_interval
    FROM timescaledb_information.jobs
    WHERE proc_name = $1 AND hypertable_schema = current_schema() AND hypertable_name = $2
"""


async def policies_available(connection: asyncpg.Connection) -> bool:
    """Whether this server's TimescaleDB edition offers policies."""
    available: bool = await connection.fetchval(f"SELECT {POLICIES_AVAILABLE}")
    return available


async def policy_jobs(
    connection: asyncpg.Connection, proc_name: str, hypertable: str, setting: str
) -> list[tuple[timedelta, timedelta]]:
    """(the policy's setting, its schedule) of each `proc_name` job on the hypertable."""
    rows = await connection.fetch(_POLICY_JOBS, proc_name, hypertable, setting)
    return [(row["setting"], row["schedule_interval"]) for row in rows]
