"""The ingest path: a stream's readings go to the readings table in binary COPY chunks,
inside one transaction, while the next messages are being decoded.

Fresh readings are copied straight into the table. The first chunk that hits an existing
key (a re-sent file, or a key repeated within the stream) is rolled back to its savepoint
and, like every chunk after it, goes through a staging table and one INSERT ... ON CONFLICT
DO UPDATE, which keeps the last value per key. Chunks are applied in stream order, so the
last write wins across chunks as well.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import numpy as np

from timeseries_aggregation.domain.batch import ReadingBatch
from timeseries_aggregation.storage.copy_format import encode_copy_rows
from timeseries_aggregation.storage.database import Database

logger = logging.getLogger(__name__)

# Readings are gathered to at least this many before one COPY: few round trips for streams
# of small messages, and a bound on what a stream holds in memory.
COPY_CHUNK_READINGS = 20_000
# Chunks waiting for the database while the next ones are decoded; beyond this the stream
# stops reading, and gRPC flow control slows the client down.
CHUNKS_IN_FLIGHT = 2

_COLUMNS = ("series_id", "time", "quantity_kwh")

_CREATE_STAGING = """
    CREATE TEMPORARY TABLE ingest_staging (
        ordinal bigint NOT NULL,
        series_id text NOT NULL,
        time timestamptz NOT NULL,
        quantity_kwh double precision NOT NULL
    ) ON COMMIT DROP
"""

# Highest ordinal per key wins within the chunk; DO UPDATE wins over stored rows. Sorting by
# the key also makes concurrent streams lock rows in one order.
_MERGE_STAGING = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT DISTINCT ON (series_id, time) series_id, time, quantity_kwh
    FROM ingest_staging
    ORDER BY series_id, time, ordinal DESC
    ON CONFLICT (series_id, time) DO UPDATE SET quantity_kwh = EXCLUDED.quantity_kwh
"""


async def _single(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


class ReadingsWriter:
    """Writes one stream's readings inside its transaction, a chunk at a time."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._pending: list[ReadingBatch] = []
        self._pending_readings = 0
        self._chunks: asyncio.Queue[ReadingBatch | None] = asyncio.Queue(maxsize=CHUNKS_IN_FLIGHT)
        self._task = asyncio.create_task(self._write_chunks())
        self._direct = True
        self._staging_created = False
        self.readings_received = 0
        # Rows inserted or updated in readings; more than the distinct keys when a key comes
        # again in a later chunk, fewer than readings_received when one repeats in a chunk.
        self.rows_written = 0
        self.series_ids: set[str] = set()

    async def add(self, batch: ReadingBatch) -> None:
        """Queue readings; they become visible only when the stream commits."""
        self._pending.append(batch)
        self._pending_readings += len(batch)
        self.readings_received += len(batch)
        self.series_ids.update(batch.series_ids)
        if self._pending_readings >= COPY_CHUNK_READINGS:
            await self._submit_pending()

    async def finish(self) -> None:
        """Write what is left and wait until every chunk is in the table."""
        await self._submit_pending()
        await self._submit(None)
        await self._task

    async def close(self) -> None:
        """Stop writing (when the stream failed); the transaction's rollback undoes it all."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _submit_pending(self) -> None:
        if self._pending:
            chunk = ReadingBatch.concatenate(self._pending)
            self._pending = []
            self._pending_readings = 0
            await self._submit(chunk)

    async def _submit(self, chunk: ReadingBatch | None) -> None:
        """Hand a chunk to the writer task, failing at once if that task has failed."""
        put = asyncio.ensure_future(self._chunks.put(chunk))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
        if self._task.done() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]

    async def _write_chunks(self) -> None:
        while (chunk := await self._chunks.get()) is not None:
            if self._direct and await self._copy_unless_conflict(chunk):
                continue
            self._direct = False
            await self._merge(chunk)

    async def _copy_unless_conflict(self, chunk: ReadingBatch) -> bool:
        try:
            async with self._connection.transaction():  # a savepoint inside the stream's transaction
                status = await self._connection.copy_to_table(
                    "readings", source=_single(encode_copy_rows(chunk)), columns=_COLUMNS, format="binary"
                )
        except asyncpg.UniqueViolationError:
            logger.debug("key conflict: this stream continues through the upsert path")
            return False
        self.rows_written += _row_count(status)
        return True

    async def _merge(self, chunk: ReadingBatch) -> None:
        if not self._staging_created:
            await self._connection.execute(_CREATE_STAGING)
            self._staging_created = True
        ordinals = np.arange(len(chunk), dtype=np.int64)
        await self._connection.copy_to_table(
            "ingest_staging",
            source=_single(encode_copy_rows(chunk, ordinals)),
            columns=("ordinal", *_COLUMNS),
            format="binary",
        )
        self.rows_written += _row_count(await self._connection.execute(_MERGE_STAGING))
        await self._connection.execute("TRUNCATE ingest_staging")


def _row_count(status: str) -> int:
    """The row count of a command status such as 'COPY 20000' or 'INSERT 0 17'."""
    return int(status.rsplit(" ", 1)[-1])


@asynccontextmanager
async def ingest_transaction(database: Database) -> AsyncIterator[ReadingsWriter]:
    """A writer whose readings are all committed when the block ends normally, or none."""
    async with database.transaction() as connection:
        writer = ReadingsWriter(connection)
        try:
            yield writer
            await writer.finish()
        finally:
            await writer.close()
