"""Rollups are kept exact by every transaction that changes readings: ingest (new readings,
overwrites, a series turning dense), DeleteReadings and rebuilds; a failed stream leaves them
as they were."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from tests.support import (
    batches,
    catalog_matches_readings,
    hourly_readings,
    ingest,
    reading,
    ts,
    writing_by_hand,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.rollups import check_series_rollups, rebuild_series_rollups

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


def minute_readings(
    series_id: str, start: str, minutes: int, step: int = 1, scale: float = 1.0
) -> list[pb.Reading]:
    """A reading every `step` minutes, of varying values (the minute of the day times `scale`)."""
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return [
        reading(series_id, first + timedelta(minutes=i), scale * ((i % 1440) + 0.125))
        for i in range(0, minutes, step)
    ]


async def rolled_up(sql: asyncpg.Connection, series_id: str) -> bool:
    flag: bool = await sql.fetchval("SELECT rolled_up FROM series WHERE series_id = $1", series_id)
    return flag


async def rollup_rows(sql: asyncpg.Connection, table: str, series_id: str) -> int:
    count: int = await sql.fetchval(f"SELECT count(*) FROM {table} WHERE series_id = $1", series_id)
    return count


async def test_a_series_denser_than_hourly_is_rolled_up_as_it_is_stored(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    # Two days and a bit of quarter-hourly readings, crossing midnight, in messages that split
    # hours between them.
    await ingest(stub, batches(minute_readings("dense", "2025-03-01T22:00", 49 * 60, step=15), 7))
    await ingest(stub, batches(hourly_readings("hourly", "2025-03-01", 72), 10))
    assert await rolled_up(sql, "dense")
    assert await rollup_rows(sql, "hourly_rollups", "dense") == 49
    assert await rollup_rows(sql, "daily_rollups", "dense") == 3
    # An hourly meter's readings are their own hourly rollups: it gets none.
    assert not await rolled_up(sql, "hourly")
    assert await rollup_rows(sql, "hourly_rollups", "hourly") == 0
    await catalog_matches_readings(sql)


async def test_overwrites_and_new_readings_of_a_rolled_up_series_change_its_rollups(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, batches(minute_readings("m", "2025-03-01", 3 * 60), 100))
    # Re-sent with other values, half of it, and readings in two new hours, one stream.
    resent = minute_readings("m", "2025-03-01T01:30", 60, scale=3.0)
    extra = minute_readings("m", "2025-03-02T05:00", 120, step=30)
    await ingest(stub, batches([*resent, *extra], 25))
    # And one more sparse reading later: a rolled-up series stays rolled up.
    await ingest(stub, [pb.IngestReadingsRequest(readings=[reading("m", "2025-04-01T00:00", 5.0)])])
    assert await rolled_up(sql, "m")
    await catalog_matches_readings(sql)
    # 02:00 to 02:29 re-sent at three times minutes 0 to 29's values, 02:30 on as they were.
    extremes = await sql.fetchrow(
        "SELECT minimum, maximum FROM hourly_rollups"
        " WHERE series_id = 'm' AND bucket_start = '2025-03-01T02:00Z'"
    )
    assert tuple(extremes) == (3.0 * 30.125, 179.125)


async def test_a_stream_that_copies_and_then_rewrites_a_series_keeps_its_days_exact(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    # Two days of minute readings, rolled up; then one stream of 25,000 new readings of the
    # meter and, after them, 1,000 of a second meter whose first 100 are stored: the first
    # chunk is copied, the second (the meter's last 5,000 new readings and the other meter's)
    # meets a stored key and goes through the upsert path.
    await ingest(stub, batches(minute_readings("m", "2025-03-01", 2 * 1440), 1000))
    await ingest(stub, batches(minute_readings("other", "2025-03-01", 100), 100))
    stream = [*minute_readings("m", "2025-03-03", 25_000), *minute_readings("other", "2025-03-01", 1000)]
    await ingest(stub, batches(stream, 1000))
    await catalog_matches_readings(sql)
    stored = await sql.fetchval(
        "SELECT count(*) FROM readings WHERE series_id = 'm' AND time >= '2025-03-01' AND time < '2025-04-01'"
    )
    request = pb.QueryAggregatesRequest(
        series_id="m",
        granularity=pb.GRANULARITY_MONTHLY,
        start_time=ts("2025-03-01"),
        end_time=ts("2025-04-01"),
    )
    # The first answer may come from the readings (the process does not know yet that the
    # series is rolled up); the second from the rollups.
    for _ in range(2):
        (month,) = (await stub.QueryAggregates(request)).buckets
        assert month.reading_count == stored == 2 * 1440 + 25_000


async def test_a_series_turning_dense_is_rolled_up_over_everything_it_held(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, batches(hourly_readings("m", "2025-01-01", 24 * 40), 500))
    assert not await rolled_up(sql, "m")
    await ingest(stub, batches(minute_readings("m", "2025-02-09T23:00", 120), 60))
    assert await rolled_up(sql, "m")
    assert await rollup_rows(sql, "hourly_rollups", "m") == 24 * 40 + 1  # one hour shared
    await catalog_matches_readings(sql)


async def test_a_failed_stream_leaves_the_rollups_as_they_were(stub: Stub, sql: asyncpg.Connection) -> None:
    await ingest(stub, batches(minute_readings("m", "2025-03-01", 120), 60))
    before = await sql.fetch("SELECT * FROM hourly_rollups ORDER BY 1, 2")

    async def failing() -> AsyncIterator[pb.IngestReadingsRequest]:
        yield pb.IngestReadingsRequest(readings=minute_readings("m", "2025-03-01", 60, scale=7.0))
        yield pb.IngestReadingsRequest(readings=minute_readings("n", "2025-03-01", 60))
        yield pb.IngestReadingsRequest(readings=[reading("m", "2025-03-01T00:00", float("nan"))])

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.IngestReadings(failing())
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await sql.fetch("SELECT * FROM hourly_rollups ORDER BY 1, 2") == before
    await catalog_matches_readings(sql)


async def test_deleting_readings_of_a_rolled_up_series_changes_its_rollups(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, batches(minute_readings("m", "2025-03-01T20:00", 8 * 60, step=5), 50))
    request = pb.DeleteReadingsRequest(
        selector=pb.SeriesSelector(series_ids=["m"]),
        start_time=ts("2025-03-01T21:30"),
        end_time=ts("2025-03-02T01:00"),
    )
    assert (await stub.DeleteReadings(request)).deleted_count == 42
    assert await rollup_rows(sql, "hourly_rollups", "m") == 8 - 3
    await catalog_matches_readings(sql)


async def test_concurrent_streams_of_one_series_leave_exact_rollups(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    # Sparse and dense streams, overlapping and not, of one series at once: whichever commits
    # first, the rollups end up those of the readings.
    streams = [
        batches(hourly_readings("m", "2025-03-01", 48, quantity_kwh=2.0), 6),
        batches(minute_readings("m", "2025-03-01T10:00", 180, step=10), 3),
        batches(minute_readings("m", "2025-03-02T10:00", 180, step=10, scale=2.0), 3),
        batches(minute_readings("m", "2025-03-01T00:00", 24 * 60, step=30), 5),
    ]
    results = await asyncio.gather(*(ingest(stub, stream) for stream in streams), return_exceptions=True)
    for result in results:
        # A deadlock between two of them is reported as a retryable conflict, never as wrong rollups.
        if isinstance(result, grpc.aio.AioRpcError):
            assert result.code() == grpc.StatusCode.ABORTED
    await catalog_matches_readings(sql)


async def test_a_rebuild_makes_rollups_from_the_readings_and_a_check_compares_them(
    database: Database, sql: asyncpg.Connection, stub: Stub
) -> None:
    await ingest(stub, batches(hourly_readings("m", "2025-01-01", 72), 72))
    # Readings written behind the service's back (a restore, a bulk load by hand).
    async with writing_by_hand(sql):
        await sql.execute(
            """
            INSERT INTO readings
            SELECT 'm', t, 0.5
            FROM generate_series('2025-01-05'::timestamptz, '2025-01-05 05:59', '1 minute') AS t
            """
        )
    await sql.execute(
        "UPDATE series SET reading_count = reading_count + 360, last_reading_time = '2025-01-05 05:59Z'"
    )
    assert await check_series_rollups(database, "m") is None  # not rolled up: nothing to check
    assert await rebuild_series_rollups(database, "m")
    assert await rolled_up(sql, "m")
    assert await check_series_rollups(database, "m") == []
    await catalog_matches_readings(sql)
    # A rollup changed by hand is found, within the range asked about or the whole series.
    await sql.execute(
        "UPDATE hourly_rollups SET total = total + 1"
        " WHERE series_id = 'm' AND bucket_start = '2025-01-05 02:00Z'"
    )
    mismatches = await check_series_rollups(database, "m")
    assert mismatches is not None
    [mismatch] = mismatches
    assert (mismatch.rollup, mismatch.bucket_start) == ("hourly", datetime(2025, 1, 5, 2, tzinfo=UTC))
    assert mismatch.stored is not None
    assert mismatch.expected is not None
    assert mismatch.stored[0] == mismatch.expected[0] + 1
    assert await check_series_rollups(database, "m", datetime(2025, 1, 5, 3, tzinfo=UTC)) == []
    # Rebuilding the hours of a range mends it.
    start, end = datetime(2025, 1, 5, 2, 30, tzinfo=UTC), datetime(2025, 1, 5, 2, 45, tzinfo=UTC)
    assert await rebuild_series_rollups(database, "m", start, end)
    assert await check_series_rollups(database, "m") == []
    assert not await rebuild_series_rollups(database, "unknown")


def rollups_command(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TIMESERIES_AGGREGATION_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "timeseries_aggregation", "rollups", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_rollups_commands_rebuild_and_check_against_the_database(
    database_url: str, sql: asyncpg.Connection, stub: Stub
) -> None:
    await ingest(stub, batches(minute_readings("m", "2025-03-01", 180), 90))
    await sql.execute(
        "UPDATE hourly_rollups SET maximum = 1e9 WHERE series_id = 'm' AND bucket_start = '2025-03-01 01:00Z'"
    )
    checked = await asyncio.to_thread(rollups_command, database_url, "check", "--all")
    assert checked.returncode == 1
    assert "'m' hourly 2025-03-01T01:00:00+00:00: stored total" in checked.stdout
    # A range outside the damage checks clean; rebuilding the hour it names mends it.
    outside = await asyncio.to_thread(
        rollups_command, database_url, "check", "--series-id", "m", "--from", "2025-03-01T02:00"
    )
    assert (outside.returncode, outside.stdout) == (0, "'m': the rollups are those of the readings\n")
    rebuilt = await asyncio.to_thread(
        rollups_command,
        database_url,
        "rebuild",
        "--series-id",
        "m",
        "--from",
        "2025-03-01T01:30",
        "--to",
        "2025-03-01T01:31",
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("rebuilt the rollups of 'm' in ")
    assert (await asyncio.to_thread(rollups_command, database_url, "check", "--all")).returncode == 0
    await catalog_matches_readings(sql)
    unknown = await asyncio.to_thread(rollups_command, database_url, "rebuild", "--series-id", "nope")
    assert (unknown.returncode, unknown.stdout) == (1, "no series 'nope' in the catalog\n")


def test_the_rollups_commands_need_the_database_url() -> None:
    environment = {key: value for key, value in os.environ.items() if "DATABASE_URL" not in key}
    finished = subprocess.run(
        [sys.executable, "-m", "timeseries_aggregation", "rollups", "check", "--all"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    assert "TIMESERIES_AGGREGATION_DATABASE_URL" in finished.stderr
