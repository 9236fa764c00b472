"""The ingest path: a stream's readings go to the readings table in binary COPY chunks,
inside one transaction, while the next messages are being decoded.

Each chunk is written in key order, so concurrent streams writing the same keys within a
chunk take their row locks in one order and cannot deadlock there; across chunks they still
can, and the database then ends one of them (reported as a retryable conflict).

Fresh readings are copied straight into the table. The first chunk that hits an existing
key (a re-sent file, or a key repeated within the stream) is rolled back to its savepoint
and, like every chunk after it, goes through a staging table and one INSERT ... ON CONFLICT
DO UPDATE, which keeps the last value per key. Chunks are applied in stream order, so the
last write wins across chunks as well.

The series catalog's figures of the stream's series (first and last reading time, reading
count) are gathered chunk by chunk and written in one statement just before the commit, in
the same transaction: a committed stream has them, a failed one changed none.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeAlias

import asyncpg
import numpy as np
from asyncpg.transaction import Transaction

from timeseries_aggregation.domain.batch import ReadingBatch
from timeseries_aggregation.domain.keys import StreamKeys
from timeseries_aggregation.domain.rollups import StreamHours
from timeseries_aggregation.errors import DatabaseUnavailableError
from timeseries_aggregation.observability.tracing import database_span
from timeseries_aggregation.storage.copy_format import encode_copy_rows
from timeseries_aggregation.storage.database import Database, row_count, terminate
from timeseries_aggregation.storage.rollups import maintain_stream_rollups
from timeseries_aggregation.storage.series_catalog import SeriesTally
from timeseries_aggregation.storage.series_locks import lock_for_streaming
from timeseries_aggregation.storage.writer_contract import DECLARE_ON_SHARDS
from timeseries_aggregation.uncancellable import complete_despite_cancellation

logger = logging.getLogger(__name__)

# What a stream enters before it takes a write connection (see ingest_stream).
WritePermit: TypeAlias = Callable[[], AbstractAsyncContextManager[None]]
# Readings are gathered to at least this many before one COPY: few round trips for streams
# of small messages, and a bound on what a stream holds in memory.
COPY_CHUNK_READINGS = 20_000
# TimescaleDB and Citus route each COPY statement's rows to chunks or shards and pay a set-up
# cost for every one the statement touches: a bulk load of a meter's history, split into COPYs
# of 20,000, ran at 0.81x of one COPY on TimescaleDB, at 0.89x in COPYs of 100,000. So there a
# stream that keeps sending gets larger chunks after its first few; plain tables gain nothing
# from it and keep the smaller memory bound.
ROUTED_COPY_CHUNK_READINGS = 100_000
ROUTED_AFTER_CHUNKS = 5
# Chunks waiting for the database while the next ones are decoded; beyond this the stream
# stops reading, and gRPC flow control slows the client down.
CHUNKS_IN_FLIGHT = 2

_COLUMNS = ("series_id", "time", "quantity_kwh")

# Errors after which a chunk's direct COPY is rolled back to its savepoint and the chunk (and
# every one after it) goes through the staging upsert instead.
_COPY_CONFLICTS: tuple[type[Exception], ...] = (asyncpg.UniqueViolationError,)
_CONFLICTS_OR_DEADLOCKS = (*_COPY_CONFLICTS, asyncpg.exceptions.DeadlockDetectedError)
# Citus relays an error a worker sends during a COPY with its message and detail but without
# its code, as an internal error (XX000). The worker's unique violation names the constraint,
# readings' primary key as the shard has it (readings_pkey_102008), in any language; any other
# relayed error (a worker that shut down, a lost connection) fails the stream.
_CITUS_KEY_CONFLICT = '"readings_pkey_'

# A re-sent reading in a compressed chunk decompresses its meter's batch (up to 1,000 rows);
# TimescaleDB's default cap of 100,000 such rows per statement would fail a correction of a
# few hundred meters. The work is bounded by the stream (a batch per reading at most), and
# the compression policy recompresses the chunk later.
NO_DECOMPRESSION_LIMIT = "SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = 0"

_CREATE_STAGING = """
    CREATE TEMPORARY TABLE ingest_staging (
        ordinal bigint NOT NULL,
        series_id text NOT NULL,
        time timestamptz NOT NULL,
        quantity_kwh double precision NOT NULL
    ) ON COMMIT DROP
"""

# Highest ordinal per key wins within the chunk; DO UPDATE wins over stored rows. Sorting by
# the key also makes concurrent streams lock rows in one order. Per series it returns the
# rows written and, for the catalog, how many of them were new keys: a row the statement
# inserted has no xmax yet, one it updated carries this transaction's.
_MERGE_STAGING = """
    WITH merged AS (
        INSERT INTO readings (series_id, time, quantity_kwh)
        SELECT DISTINCT ON (series_id, time) series_id, time, quantity_kwh
        FROM ingest_staging
        ORDER BY series_id, time, ordinal DESC
        ON CONFLICT (series_id, time) DO UPDATE SET quantity_kwh = EXCLUDED.quantity_kwh
        RETURNING series_id, time, xmax = 0 AS inserted
    )
    SELECT series_id,
           (extract(epoch FROM min(time)) * 1000000)::bigint AS first_micros,
           (extract(epoch FROM max(time)) * 1000000)::bigint AS last_micros,
           count(*) FILTER (WHERE inserted) AS added,
           count(*) AS written
    FROM merged
    GROUP BY series_id
"""


async def _single(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


class ReadingsWriter:
    """Writes one stream's readings inside its transaction, a chunk at a time.

    The connection is taken, and the transaction begun, only when the first chunk is ready:
    a stream that has sent nothing yet holds nothing of the database.
    """

    def __init__(self, database: Database, write_permit: WritePermit | None = None) -> None:
        self._database = database
        self._write_permit = write_permit
        self._pending: list[ReadingBatch] = []
        self._pending_readings = 0
        self._chunks: asyncio.Queue[ReadingBatch | None] = asyncio.Queue(maxsize=CHUNKS_IN_FLIGHT)
        self._task: asyncio.Task[None] | None = None
        self._resources = contextlib.AsyncExitStack()
        self._connection: asyncpg.Connection | None = None
        self._transaction: Transaction | None = None
        # Until the first key conflict, chunks are copied straight into readings.
        self._direct = True
        self._capabilities = database.capabilities
        self._copy_conflicts = (
            _CONFLICTS_OR_DEADLOCKS if self._capabilities.copy_conflicts_as_deadlocks else _COPY_CONFLICTS
        )
        self._locked_series: set[str] = set()
        self._chunks_submitted = 0
        self._staging_created = False
        self.readings_received = 0
        # Rows inserted or updated in readings; more than the distinct keys when a key comes
        # again in a later chunk, fewer than readings_received when one repeats in a chunk.
        self.rows_written = 0
        self.series_ids: set[str] = set()
        # The distinct (series, time) keys sent, which a committed stream has written.
        self.keys = StreamKeys()
        # The catalog figures of the stream's series, written just before it commits.
        self.tally = SeriesTally()
        # What it did to each hour, for the rollups brought up to date before it commits.
        self.hours = StreamHours()

    async def add(self, batch: ReadingBatch) -> None:
        """Queue readings; they become visible only when the stream commits."""
        self._pending.append(batch)
        self._pending_readings += len(batch)
        self.readings_received += len(batch)
        self.series_ids.update(batch.series_ids)
        if self._pending_readings >= self._chunk_readings():
            await self._submit_pending()

    @property
    def keys_added(self) -> int:
        """The keys written that no stored reading had before: rows the stream inserted."""
        return sum(self.tally.added.values())

    def _chunk_readings(self) -> int:
        if self._capabilities.routes_copies and self._chunks_submitted >= ROUTED_AFTER_CHUNKS:
            return ROUTED_COPY_CHUNK_READINGS
        return COPY_CHUNK_READINGS

    async def flush(self) -> None:
        """Write what is left and wait until every chunk is in the table (not yet committed)."""
        await self._submit_pending()
        if self._task is not None:
            await self._submit(None)
            await self._task

    async def commit(self) -> None:
        """Commit what flush() wrote and give the connection back.

        Run it uncancellably (complete_despite_cancellation): once COMMIT is sent, its outcome
        is the stream's, and nothing after it may turn a committed stream into a failed call.
        """
        if self._transaction is None:
            return
        try:
            async with self._database.translate_errors():
                with database_span("commit", {"db.operation.name": "COMMIT"}):
                    await self._transaction.commit()
        except DatabaseUnavailableError:
            raise DatabaseUnavailableError(
                "the database stopped answering during the commit, so whether the stream was stored "
                "is unknown; re-sending it is safe (ingest replaces readings by key)"
            ) from None
        self._transaction = None
        await self._resources.aclose()

    async def close(self) -> None:
        """Stop writing and roll back whatever was not committed; give the connection back."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        lost = self._connection is not None and self._lost_the_database()
        if lost and self._connection is not None:
            # A rollback or a polite close would wait on a server that is not answering.
            terminate(self._connection)
        try:
            if self._transaction is not None and self._connection is not None and not lost:
                # A broken connection cannot roll back; the server does that when it closes.
                try:
                    await self._transaction.rollback()
                except Exception:
                    # The transaction is in no state to roll back: a cancel cut its BEGIN short
                    # (asyncpg then refuses, though the server may have begun it), or the
                    # connection broke. Back in the pool, asyncpg would find it in a transaction
                    # and log an error; closed, the server rolls back what there is.
                    terminate(self._connection)
        finally:
            self._transaction = None
            await self._resources.aclose()

    def _lost_the_database(self) -> bool:
        task = self._task
        return (
            task is not None
            and task.done()
            and not task.cancelled()
            and isinstance(task.exception(), DatabaseUnavailableError)
        )

    async def _submit_pending(self) -> None:
        if self._pending:
            chunk = ReadingBatch.concatenate(self._pending).sorted_by_key()
            self.keys.add(chunk)
            self._pending = []
            self._pending_readings = 0
            self._chunks_submitted += 1
            await self._submit(chunk)

    async def _submit(self, chunk: ReadingBatch | None) -> None:
        """Hand a chunk to the writer task, failing at once if that task has failed."""
        if self._task is None:
            self._task = asyncio.create_task(self._write_chunks())
        put = asyncio.ensure_future(self._chunks.put(chunk))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
        if self._task.done() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]

    async def _write_chunks(self) -> None:
        try:
            await self._write_chunks_in_transaction()
        except DatabaseUnavailableError as error:
            # Before the commit: the transaction was never committed, so nothing of it is stored.
            raise DatabaseUnavailableError(
                f"{error} (nothing of this stream was stored; re-sending it is safe)"
            ) from error

    async def _write_chunks_in_transaction(self) -> None:
        if self._write_permit is not None:
            # Held with the connection, given back when it is.
            await self._resources.enter_async_context(self._write_permit())
        async with self._database.translate_errors():
            connection = await self._resources.enter_async_context(self._database.write_connection())
            self._connection = connection
            self._transaction = connection.transaction()
            await self._transaction.start()
            if self._capabilities.distributed:
                # Citus checks the schema contract on the shards (writer_contract.py).
                await connection.execute(DECLARE_ON_SHARDS)
            if self._capabilities.decompresses_on_write:
                await connection.execute(NO_DECOMPRESSION_LIMIT)
            while (chunk := await self._chunks.get()) is not None:
                await self._lock_series(connection, chunk)
                if self._direct and await self._copy_unless_conflict(connection, chunk):
                    continue
                self._direct = False
                await self._merge(connection, chunk)
            with database_span("catalog and rollups", {"timeseries.series_count": len(self.series_ids)}):
                catalog = await self.tally.write(connection)
                await maintain_stream_rollups(connection, self.hours, catalog, self.tally.added)

    async def _lock_series(self, connection: asyncpg.Connection, chunk: ReadingBatch) -> None:
        """Take the stream's locks of the chunk's series it has not written yet (series_locks.py)."""
        unlocked = [series_id for series_id in chunk.series_ids if series_id not in self._locked_series]
        await lock_for_streaming(connection, unlocked, self._capabilities.locks_series_on_workers)
        self._locked_series.update(unlocked)

    async def _copy_unless_conflict(self, connection: asyncpg.Connection, chunk: ReadingBatch) -> bool:
        with database_span("copy chunk", _chunk_attributes("COPY", chunk)) as span:
            try:
                async with connection.transaction():  # a savepoint inside the stream's transaction
                    status = await connection.copy_to_table(
                        "readings", source=_single(encode_copy_rows(chunk)), columns=_COLUMNS, format="binary"
                    )
            except Exception as error:
                if not self._is_key_conflict(error):
                    raise
                logger.debug("%s: this stream continues through the upsert path", type(error).__name__)
                if span is not None:
                    span.set_attribute("timeseries.continues_as_upsert", True)
                return False
        self.rows_written += row_count(status)
        self.tally.add_new_readings(chunk)
        self.hours.copied(chunk)
        return True

    def _is_key_conflict(self, error: Exception) -> bool:
        if isinstance(error, self._copy_conflicts):
            return True
        return (
            self._capabilities.copy_relays_worker_errors
            and isinstance(error, asyncpg.InternalServerError)
            and _CITUS_KEY_CONFLICT in error.message
        )

    async def _merge(self, connection: asyncpg.Connection, chunk: ReadingBatch) -> None:
        with database_span("upsert chunk", _chunk_attributes("INSERT", chunk)):
            await self._merge_chunk(connection, chunk)

    async def _merge_chunk(self, connection: asyncpg.Connection, chunk: ReadingBatch) -> None:
        if not self._staging_created:
            await connection.execute(_CREATE_STAGING)
            self._staging_created = True
        ordinals = np.arange(len(chunk), dtype=np.int64)
        await connection.copy_to_table(
            "ingest_staging",
            source=_single(encode_copy_rows(chunk, ordinals)),
            columns=("ordinal", *_COLUMNS),
            format="binary",
        )
        for row in await connection.fetch(_MERGE_STAGING):
            self.rows_written += row["written"]
            self.tally.add(row["series_id"], row["first_micros"], row["last_micros"], row["added"])
        self.hours.merged(chunk)
        await connection.execute("TRUNCATE ingest_staging")


def _chunk_attributes(operation: str, chunk: ReadingBatch) -> dict[str, str | int]:
    """A chunk's database span: the statement's kind and how many readings of how many series."""
    return {
        "db.operation.name": operation,
        "db.collection.name": "readings",
        "timeseries.readings": len(chunk),
        "timeseries.series_count": len(chunk.series_ids),
    }


@asynccontextmanager
async def ingest_stream(
    database: Database, write_permit: WritePermit | None = None
) -> AsyncIterator[ReadingsWriter]:
    """A writer for one stream; whatever it has not committed when the block ends is rolled back.

    write_permit: entered before the stream takes a write connection and left when it gives it
    back; it raises to refuse the stream a connection (a caller's share of the pool).
    """
    writer = ReadingsWriter(database, write_permit)
    try:
        yield writer
    finally:
        # A second cancel must not cut the rollback short and keep the connection from the pool.
        await complete_despite_cancellation(writer.close())
