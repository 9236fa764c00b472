"""Concurrent streams writing the same keys: a fixed write order within each chunk, and a
retryable ABORTED (never INTERNAL) when the database must end one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from tests.support import eventually, service_transactions_waiting
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.readings import COPY_CHUNK_READINGS

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

HOUR_MICROS = 3_600_000_000
START_2025 = 1_735_689_600_000_000


def meter(series_id: str, first_hour: int, hours: int, quantity_kwh: float) -> pb.SeriesReadings:
    return pb.SeriesReadings(
        series_id=series_id,
        time_unix_micros=[START_2025 + (first_hour + i) * HOUR_MICROS for i in range(hours)],
        quantity_kwh=[quantity_kwh] * hours,
    )


async def stored(database: Database) -> dict[tuple[str, float], int]:
    async with database.query_connection() as connection:
        rows = await connection.fetch(
            "SELECT series_id, quantity_kwh, count(*) AS readings FROM readings GROUP BY 1, 2"
        )
    return {(row["series_id"], row["quantity_kwh"]): row["readings"] for row in rows}


async def test_streams_writing_the_same_keys_in_opposite_orders_within_a_chunk_both_succeed(
    stub: TimeseriesAggregationServiceAsyncStub, database: Database
) -> None:
    hours = 20_000
    for attempt in range(4):
        # New keys each round, so both streams take the direct COPY path into the table.
        first_hour = attempt * hours
        forward = pb.IngestReadingsRequest(
            series_readings=[meter("m1", first_hour, hours, 1.0), meter("m2", first_hour, hours, 1.0)]
        )
        backward = pb.IngestReadingsRequest(
            series_readings=[meter("m2", first_hour, hours, 2.0), meter("m1", first_hour, hours, 2.0)]
        )
        outcomes = await asyncio.gather(
            stub.IngestReadings(iter([forward])),
            stub.IngestReadings(iter([backward])),
            return_exceptions=True,
        )
        assert [getattr(outcome, "readings_received", outcome) for outcome in outcomes] == [40_000, 40_000]
    # Each round's keys all hold the value of the stream that committed last: whole streams won.
    async with database.query_connection() as connection:
        rounds = await connection.fetch(
            "SELECT floor(extract(epoch FROM time - '2025-01-01Z') / 3600 / $1) AS round, "
            "count(*) AS readings, count(DISTINCT quantity_kwh) AS values "
            "FROM readings GROUP BY 1 ORDER BY 1",
            hours,
        )
    assert [(row["round"], row["readings"], row["values"]) for row in rounds] == [
        (attempt, 2 * hours, 1) for attempt in range(4)
    ]


async def test_a_deadlock_across_chunks_ends_one_stream_aborted_and_stores_only_the_other(
    stub: TimeseriesAggregationServiceAsyncStub, database: Database
) -> None:
    hours = COPY_CHUNK_READINGS
    # On a hypertable, the first stream to write a time range creates its chunks and a second
    # one waits for that to commit: have the chunks exist already, as they would in production.
    await stub.IngestReadings(
        iter([pb.IngestReadingsRequest(series_readings=[meter("other", 0, hours, 0.0)])])
    )
    both_first_chunks_written = asyncio.Event()

    async def stream(first: str, second: str, quantity_kwh: float) -> AsyncIterator[pb.IngestReadingsRequest]:
        yield pb.IngestReadingsRequest(series_readings=[meter(first, 0, hours, quantity_kwh)])
        await both_first_chunks_written.wait()
        yield pb.IngestReadingsRequest(series_readings=[meter(second, 0, hours, quantity_kwh)])

    calls = [
        asyncio.ensure_future(stub.IngestReadings(stream("m1", "m2", 1.0))),
        asyncio.ensure_future(stub.IngestReadings(stream("m2", "m1", 2.0))),
    ]

    async def two_transactions_wrote_and_wait() -> None:
        async with database.query_connection() as connection:
            assert await service_transactions_waiting(connection) == 2

    await eventually(two_transactions_wrote_and_wait)
    both_first_chunks_written.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    codes = sorted(
        outcome.code().name if isinstance(outcome, grpc.aio.AioRpcError) else "OK" for outcome in outcomes
    )
    assert codes == ["ABORTED", "OK"]
    failed = next(outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError))
    assert "retry" in (failed.details() or "")
    winner = 1.0 if isinstance(outcomes[1], grpc.aio.AioRpcError) else 2.0
    assert await stored(database) == {("m1", winner): hours, ("m2", winner): hours, ("other", 0.0): hours}
