"""The ingest path: COPY a stream's readings into a staging table, then merge them at once."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

from timeseries_aggregation.storage.database import Database

# One reading as the storage layer takes it: (series_id, time, quantity_kwh).
ReadingRecord = tuple[str, datetime, float]

# Readings are buffered up to this many before one COPY; bounds memory per stream while
# keeping round trips few when clients send many small messages.
COPY_CHUNK_SIZE = 10_000

_CREATE_STAGING = """
    CREATE TEMPORARY TABLE ingest_staging (
        ordinal bigint NOT NULL,
        series_id text NOT NULL,
        time timestamptz NOT NULL,
        quantity_kwh double precision NOT NULL
    ) ON COMMIT DROP
"""

# Last write wins inside the stream (highest ordinal per key) and against stored rows
# (DO UPDATE). Sorting by the key also makes concurrent streams lock rows in one order.
_MERGE_STAGING = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT DISTINCT ON (series_id, time) series_id, time, quantity_kwh
    FROM ingest_staging
    ORDER BY series_id, time, ordinal DESC
    ON CONFLICT (series_id, time) DO UPDATE SET quantity_kwh = EXCLUDED.quantity_kwh
"""


class ReadingsWriter:
    """Collects one stream's readings inside its transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._pending: list[tuple[int, str, datetime, float]] = []
        self._received = 0

    @property
    def readings_received(self) -> int:
        return self._received

    async def add(self, records: Sequence[ReadingRecord]) -> None:
        """Stage readings; they become visible only when the stream commits."""
        start = self._received
        self._pending.extend(
            (ordinal, series_id, time, quantity)
            for ordinal, (series_id, time, quantity) in enumerate(records, start)
        )
        self._received += len(records)
        if len(self._pending) >= COPY_CHUNK_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            await self._connection.copy_records_to_table(
                "ingest_staging",
                records=self._pending,
                columns=("ordinal", "series_id", "time", "quantity_kwh"),
            )
            self._pending = []

    async def merge(self) -> int:
        """Write the staged readings into readings; returns the number of distinct keys."""
        await self._flush()
        status: str = await self._connection.execute(_MERGE_STAGING)
        return int(status.rsplit(" ", 1)[-1])


@asynccontextmanager
async def ingest_transaction(database: Database) -> AsyncIterator[ReadingsWriter]:
    """A writer whose readings are all committed when the block ends, or none of them."""
    async with database.transaction() as connection:
        await connection.execute(_CREATE_STAGING)
        yield ReadingsWriter(connection)
