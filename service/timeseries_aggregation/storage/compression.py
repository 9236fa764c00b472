"""Columnstore compression of older readings, where TimescaleDB offers it.

Migration 0006 enables compression on the readings hypertable; at start-up the service brings
TimescaleDB's compression policy, which compresses the chunks older than the configured age,
in step with its setting. Plain PostgreSQL and TimescaleDB's Apache-2-only edition have no
compression: there readings stay uncompressed rows and the setting is reported as unused.
"""

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from timeseries_aggregation.domain.durations import format_duration
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.policies import COMPRESSION_POLICY, keep_policy

logger = logging.getLogger(__name__)

# Serialises replicas changing the policy at once; any number they share.
_COMPRESSION_LOCK_KEY = 0x7453_6169


async def keep_compression_in_step(database: Database, compress_after: timedelta) -> None:
    """Make the compression policy on readings match `compress_after` (zero: no policy)."""
    if not database.capabilities.hypertables:
        logger.info("compression: not available without TimescaleDB, readings are stored uncompressed")
        return
    if not (database.capabilities.job_scheduler and database.capabilities.compression):
        # Said once per start; the server serves the same answers from uncompressed rows.
        logger.log(
            logging.WARNING if compress_after else logging.INFO,
            "compression: this TimescaleDB (the Apache-2-only edition) has no compression; "
            "readings are stored uncompressed",
        )
        return
    async with database.query_connection() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _COMPRESSION_LOCK_KEY)
        await keep_policy(connection, COMPRESSION_POLICY, "readings", compress_after)
    logger.info(
        "compression: %s",
        f"chunks of readings older than {format_duration(compress_after)} are compressed by a "
        "TimescaleDB policy"
        if compress_after
        else "off, no more chunks of readings are compressed",
    )


@contextlib.asynccontextmanager
async def readings_compression(database: Database, compress_after: timedelta) -> AsyncIterator[None]:
    """Keep the compression policy in step with the setting before the block runs."""
    await keep_compression_in_step(database, compress_after)
    yield
