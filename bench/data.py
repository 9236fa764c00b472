"""The readings the sections load: generated datasets sent to the service or copied in by hand,
their catalog rows and rollups, and emptying the tables between sections."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import numpy as np

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.client import row_messages, series_messages
from timeseries_aggregation.rollup_maintenance import rebuild_rollups
from timeseries_aggregation.storage.writer_contract import DECLARE_ON_SHARDS

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


HOUR_MICROS = 3_600_000_000
YEAR_2025 = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_2026 = datetime(2026, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Dataset:
    """meters x hours hourly readings from 2025-01-01, meter by meter."""

    meters: int
    hours: int
    prefix: str = "meter"

    @property
    def size(self) -> int:
        return self.meters * self.hours

    def series_id(self, meter: int) -> str:
        return f"{self.prefix}-{meter:03d}"

    def times(self) -> np.ndarray:
        start = (YEAR_2025 - UNIX_EPOCH) // timedelta(microseconds=1)
        return start + np.arange(self.hours, dtype=np.int64) * HOUR_MICROS

    def quantities(self, meter: int) -> np.ndarray:
        return 1.0 + ((np.arange(self.hours) + meter) % 24) * 0.25

    def tuples(self) -> list[tuple[str, datetime, float]]:
        times = [YEAR_2025 + timedelta(hours=hour) for hour in range(self.hours)]
        return [
            (self.series_id(meter), moment, float(quantity))
            for meter in range(self.meters)
            for moment, quantity in zip(times, self.quantities(meter), strict=True)
        ]

    def column_messages(self, message_size: int) -> Iterator[pb.IngestReadingsRequest]:
        times = self.times()
        for meter in range(self.meters):
            yield from series_messages(self.series_id(meter), times, self.quantities(meter), message_size)

    def row_messages(self, message_size: int) -> Iterator[pb.IngestReadingsRequest]:
        times = self.times().tolist()

        def readings() -> Iterator[tuple[str, int, float]]:
            for meter in range(self.meters):
                series_id = self.series_id(meter)
                yield from zip([series_id] * self.hours, times, self.quantities(meter).tolist(), strict=True)

        return row_messages(readings(), message_size)


async def stream(stub: Stub, messages: Sequence[pb.IngestReadingsRequest]) -> float:
    """Send prepared messages as one IngestReadings stream; returns the seconds it took."""
    started = time.perf_counter()
    await stub.IngestReadings(iter(messages))
    return time.perf_counter() - started


# The catalog rows of readings loaded by hand, as ingest would keep them: a query of a series
# the catalog lacks is NOT_FOUND.
FIGURES_FROM_READINGS = """
    INSERT INTO series AS stored (series_id, first_reading_time, last_reading_time, reading_count)
    SELECT series_id, min(time), max(time), count(*) FROM readings GROUP BY series_id
    ON CONFLICT (series_id) DO UPDATE SET
        first_reading_time = EXCLUDED.first_reading_time,
        last_reading_time = EXCLUDED.last_reading_time,
        reading_count = EXCLUDED.reading_count
"""


async def write_readings(
    connection: asyncpg.Connection,
    statement: str,
    *arguments: object,
    timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's limit for the statement, passed on)
) -> None:
    """Run a statement that writes readings by hand, in a transaction that declares this build's
    schema contract, as the database requires of every writer (storage/writer_contract.py)."""
    async with connection.transaction():
        await connection.execute(DECLARE_ON_SHARDS)
        await connection.execute(statement, *arguments, timeout=timeout)


async def copy_readings(connection: asyncpg.Connection, records: list[tuple[str, datetime, float]]) -> float:
    """One binary COPY of records into readings, declared as write_readings declares; the
    seconds from the COPY's start to its commit."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(DECLARE_ON_SHARDS)
        began = time.perf_counter()
        await connection.copy_records_to_table(
            "readings", records=records, columns=("series_id", "time", "quantity_kwh")
        )
        await transaction.commit()
    except BaseException:
        await transaction.rollback()
        raise
    return time.perf_counter() - began


async def load_query_dataset(connection: asyncpg.Connection, dataset: Dataset) -> None:
    await empty_tables(connection)
    await copy_readings(connection, dataset.tuples())
    await connection.execute(FIGURES_FROM_READINGS)
    await connection.execute("VACUUM ANALYZE readings, series")


# Meters reporting every 15 minutes, values as a meter reports them: kWh with three decimals,
# a daily curve plus noise (what compression meets in production, unlike a constant).
QUARTER_HOURLY_LOAD = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT format('meter-%s', lpad(meter::text, 5, '0')), instant,
           round((0.05 + 0.2 * (1 + sin(2 * pi() * extract(epoch FROM instant) / 86400))
                  + 0.1 * random())::numeric, 3)::double precision
    FROM generate_series(1, $1) AS meter,
         generate_series(timestamptz '2025-01-02',
                         timestamptz '2025-01-02' + $2::interval - interval '15 minutes',
                         interval '15 minutes') AS instant
"""


ROLLUP_TABLES = "hourly_rollups, daily_rollups"


async def empty_tables(connection: asyncpg.Connection) -> None:
    """No readings, series or rollups: a section's data starts from nothing."""
    await connection.execute(f"TRUNCATE readings, {ROLLUP_TABLES}")
    await connection.execute("DELETE FROM series")


async def rebuilt_rollups(connection: asyncpg.Connection, database_url: str) -> tuple[int, float]:
    """Rollups of every series loaded by hand, as ingest would have kept them, made by the
    operator's rebuild; returns how many series and the seconds it took."""
    series_ids = [row["series_id"] for row in await connection.fetch("SELECT series_id FROM series")]
    started = time.perf_counter()
    await rebuild_rollups(database_url, series_ids, None, None, io.StringIO())
    return len(series_ids), time.perf_counter() - started
