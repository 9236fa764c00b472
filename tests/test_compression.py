"""Compressed chunks of readings: ingest and queries hold on them; the policy follows the setting.

The tests compress chunks themselves (compress_chunk) instead of waiting for the policy. They
run on every engine; where readings cannot be compressed (plain PostgreSQL, TimescaleDB's
Apache-2-only edition) they check the same answers on uncompressed rows, and the policy tests
are skipped.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from tests.support import (
    SAMPLE_ZONES,
    batches,
    compress_every_chunk,
    compressible,
    ingest,
    query_all_pages,
    reading,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.storage.compression import readings_compression
from timeseries_aggregation.storage.database import Database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

QUARTER_HOUR_MICROS = 15 * 60 * 1_000_000
# A week of quarter-hourly readings: one 7-day chunk's worth per meter.
WEEK = 7 * 96
# Enough meters that overwriting their compressed week decompresses more rows (107,520) than
# TimescaleDB lets one transaction decompress by default (100,000).
METERS = 160
COMPRESSION_LOGGER = "timeseries_aggregation.storage.compression"


async def rows_outside_the_columnstore(connection: asyncpg.Connection) -> int:
    """Readings held as plain rows in the chunks: those written or decompressed since compression."""
    if not await compressible(connection):
        return 0
    chunks = await connection.fetch("SELECT show_chunks('readings')::text AS chunk")
    total = 0
    for row in chunks:
        total += await connection.fetchval(f"SELECT count(*) FROM ONLY {row['chunk']}")
    return total


def quarter_hours(series_id: str, start: str, values: list[float]) -> pb.SeriesReadings:
    """Columnar readings of one meter every 15 minutes from start."""
    first = ts(start).ToMicroseconds()
    return pb.SeriesReadings(
        series_id=series_id,
        time_unix_micros=[first + i * QUARTER_HOUR_MICROS for i in range(len(values))],
        quantity_kwh=values,
    )


def week_of_every_meter(value: float, start: str = "2025-01-02") -> list[pb.IngestReadingsRequest]:
    # 2025-01-02 is a Thursday: TimescaleDB's 7-day chunks start on Thursdays (as 1970-01-01 did).
    return [
        pb.IngestReadingsRequest(series_readings=[quarter_hours(f"meter-{n}", start, [value] * WEEK)])
        for n in range(METERS)
    ]


async def stored_values(connection: asyncpg.Connection) -> dict[tuple[str, str], float]:
    rows = await connection.fetch("SELECT series_id, time, quantity_kwh FROM readings")
    return {(row["series_id"], row["time"].isoformat()): row["quantity_kwh"] for row in rows}


async def test_a_backfill_over_a_compressed_week_makes_the_last_write_win(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, week_of_every_meter(1.0))
    engine_compresses = await compressible(sql)
    assert await compress_every_chunk(sql) == (1 if engine_compresses else 0)

    # Every reading of the compressed week again, a new meter in it, and one key twice.
    again = [
        *week_of_every_meter(2.0),
        pb.IngestReadingsRequest(
            readings=[
                reading("new-meter", "2025-01-03T12:00", 5.0),
                reading("meter-7", "2025-01-04T00:15", 8.0),
                reading("meter-7", "2025-01-04T00:15", 9.0),
            ]
        ),
    ]
    response = await ingest(stub, again)

    assert response.readings_received == METERS * WEEK + 3
    values = await stored_values(sql)
    assert len(values) == METERS * WEEK + 1
    assert values.pop(("new-meter", "2025-01-03T12:00:00+00:00")) == 5.0
    assert values.pop(("meter-7", "2025-01-04T00:15:00+00:00")) == 9.0
    assert set(values.values()) == {2.0}


async def test_a_sparse_correction_of_many_compressed_meters_makes_the_last_write_win(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, week_of_every_meter(1.0))
    await compress_every_chunk(sql)
    # One corrected reading per meter: one statement that decompresses every meter's batch.
    corrections = [reading(f"meter-{n}", "2025-01-06T10:00", 6.0) for n in range(METERS)]

    await ingest(stub, [pb.IngestReadingsRequest(readings=corrections)])

    values = await stored_values(sql)
    assert len(values) == METERS * WEEK
    assert {key for key, value in values.items() if value == 6.0} == {
        (f"meter-{n}", "2025-01-06T10:00:00+00:00") for n in range(METERS)
    }


async def test_a_failing_stream_over_a_compressed_chunk_leaves_nothing(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, week_of_every_meter(1.0))
    await compress_every_chunk(sql)
    before = await stored_values(sql)
    requests = [*week_of_every_meter(3.0), pb.IngestReadingsRequest(readings=[reading("m", "2025-01-05", 1)])]
    # The bad reading comes after all of the compressed week has been rewritten.
    requests.append(pb.IngestReadingsRequest(readings=[reading("meter-1", "2025-01-05", math.nan)]))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, requests)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await stored_values(sql) == before
    # The batches the stream decompressed are compressed again: the rollback undid that too.
    assert await rows_outside_the_columnstore(sql) == 0


async def test_query_answers_are_the_same_before_and_after_compression(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    # Three weeks of varying values for a few meters, over a month's end and a DST-free span.
    readings = [
        quarter_hours(
            f"meter-{n}", "2025-01-20", [round(0.1 + (i * 7 + n) % 13 * 0.137, 3) for i in range(3 * 7 * 96)]
        )
        for n in range(3)
    ]
    await ingest(stub, [pb.IngestReadingsRequest(series_readings=[each]) for each in readings])
    requests = [
        pb.QueryAggregatesRequest(
            series_id=f"meter-{n}", granularity=granularity, time_zone=zone, page_size=50
        )
        for n in range(3)
        for granularity in (pb.GRANULARITY_HOURLY, pb.GRANULARITY_DAY_OF_MONTH, pb.GRANULARITY_MONTHLY)
        for zone in SAMPLE_ZONES[:3]
    ]
    requests.append(
        pb.QueryAggregatesRequest(
            series_id="meter-1",
            granularity=pb.GRANULARITY_DAY_OF_MONTH,
            start_time=ts("2025-01-25T06:00"),
            end_time=ts("2025-02-03T18:00"),
            time_zone="Asia/Kathmandu",
        )
    )
    before = [await query_all_pages(stub, request) for request in requests]

    await compress_every_chunk(sql)

    after = [await query_all_pages(stub, request) for request in requests]
    # Totals (and means) to the rounding of their additions, whose order the plan decides.
    assert [[split_sums(bucket) for bucket in buckets] for buckets in after] == [
        [split_sums(bucket, approx=True) for bucket in buckets] for buckets in before
    ]
    assert await rows_outside_the_columnstore(sql) == 0


def split_sums(bucket: pb.Bucket, approx: bool = False) -> tuple[pb.Bucket, dict[str, object]]:
    """The bucket without its total and mean, and those apart: as they are, or as pytest.approx."""
    fields: dict[str, object] = {}
    for field in ("total_quantity_kwh", "mean_quantity_kwh"):
        value = getattr(bucket, field)
        fields[field] = pytest.approx(value, rel=1e-12) if approx else value
    rest = pb.Bucket()
    rest.CopyFrom(bucket)
    rest.ClearField("total_quantity_kwh")
    rest.ClearField("mean_quantity_kwh")
    return (rest, fields)


async def compression_policies(connection: asyncpg.Connection) -> list[timedelta]:
    rows = await connection.fetch(
        "SELECT (config ->> 'compress_after')::interval AS compress_after FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_compression' AND hypertable_name = 'readings'"
    )
    return [row["compress_after"] for row in rows]


async def test_the_policy_follows_the_setting_of_each_start(
    database: Database, sql: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=COMPRESSION_LOGGER)
    if not await compressible(sql):
        async with readings_compression(database, timedelta(days=28)):
            pass
        [record] = [record for record in caplog.records if record.name == COMPRESSION_LOGGER]
        assert "uncompressed" in record.getMessage()
        pytest.skip("this database cannot compress readings: the setting is only reported, once")
    async with readings_compression(database, timedelta(days=28)):
        assert await compression_policies(sql) == [timedelta(days=28)]
    async with readings_compression(database, timedelta(days=28)):
        assert await compression_policies(sql) == [timedelta(days=28)]
    async with readings_compression(database, timedelta(hours=36)):
        assert await compression_policies(sql) == [timedelta(hours=36)]
    async with readings_compression(database, timedelta(0)):
        assert await compression_policies(sql) == []


async def test_readings_written_later_into_a_compressed_chunk_are_counted_and_queried(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(
        stub, batches([reading("m", "2025-01-02T00:00", 1.0), reading("m", "2025-01-02T00:15", 2.0)], 2)
    )
    await compress_every_chunk(sql)
    # A fresh key in the compressed chunk goes in by the direct COPY, no conflict to detect.
    await ingest(stub, [pb.IngestReadingsRequest(readings=[reading("m", "2025-01-02T00:30", 4.0)])])
    [bucket] = await query_all_pages(
        stub, pb.QueryAggregatesRequest(series_id="m", granularity=pb.GRANULARITY_DAY_OF_MONTH)
    )
    assert (bucket.total_quantity_kwh, bucket.reading_count) == (7.0, 3)
