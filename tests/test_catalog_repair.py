"""Repairing what is derived from the readings: the catalog's figures and the rollups, after a
server that kept neither wrote readings behind them (an upgrade, a rolling deploy)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg

from tests.support import (
    batches,
    catalog_matches_readings,
    compress_every_chunk,
    eventually,
    hourly_readings,
    ingest,
    query_all_pages,
    rollups_match_readings,
    service_transactions_waiting,
    writing_by_hand,
)
from tests.test_rollups import minute_readings, rolled_up
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.storage.database import Database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


def command(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TIMESERIES_AGGREGATION_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "timeseries_aggregation", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def run(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(command, database_url, *arguments)


# What an old server wrote: readings only, neither catalog figures nor rollups.
_OLD_SERVER_WRITES = """
    INSERT INTO readings
    SELECT $1, t, $4
    FROM generate_series($2::text::timestamptz, $3::text::timestamptz, $5::text::interval) AS t
"""


async def old_server_writes(
    sql: asyncpg.Connection, series_id: str, first: str, last: str, kwh: float, every: str
) -> None:
    # Before the schema contract, or while a rollback let older builds write: the session
    # declares the contract the database requires, as nothing else may write readings.
    async with writing_by_hand(sql):
        await sql.execute(_OLD_SERVER_WRITES, series_id, f"{first}Z", f"{last}Z", kwh, every)


async def label(stub: Stub, series_id: str, **labels: str) -> None:
    await stub.UpdateSeries(pb.UpdateSeriesRequest(series=pb.Series(series_id=series_id, labels=labels)))


async def month_total(stub: Stub, selector: pb.SeriesSelector) -> float:
    buckets = await query_all_pages(
        stub,
        pb.QueryAggregatesRequest(selector=selector, granularity=pb.GRANULARITY_MONTHLY),
    )
    return sum(bucket.total_quantity_kwh for bucket in buckets)


async def sql_total(sql: asyncpg.Connection, *series_ids: str) -> float:
    total: float = await sql.fetchval(
        "SELECT coalesce(sum(quantity_kwh), 0) FROM readings WHERE series_id = ANY($1::text[])",
        list(series_ids),
    )
    return total


async def test_check_finds_catalog_drift_and_rebuild_repairs_it(
    database_url: str, sql: asyncpg.Connection, stub: Stub
) -> None:
    # A quarter-hourly meter labelled for its site, whose first day an old server wrote.
    await label(stub, "dense", site="berlin")
    await old_server_writes(sql, "dense", "2025-03-01 00:00", "2025-03-01 23:45", 1.25, "15 minutes")
    await ingest(stub, batches(minute_readings("dense", "2025-03-02", 4 * 24 * 60, step=15), 500))
    # A meter only an old server wrote: 720 kWh the catalog never heard of.
    await old_server_writes(sql, "unknown", "2025-03-01 00:00", "2025-03-30 23:00", 1.0, "1 hour")
    # A meter whose count is off, one whose catalog row went, and one with labels but no readings
    # that the catalog says has some.
    await ingest(stub, batches(hourly_readings("miscounted", "2025-03-01", 48), 48))
    await sql.execute("UPDATE series SET reading_count = reading_count + 5 WHERE series_id = 'miscounted'")
    await ingest(stub, batches(hourly_readings("rowless", "2025-03-01", 24, 2.0), 24))
    await sql.execute("DELETE FROM series WHERE series_id = 'rowless'")
    await label(stub, "empty", site="berlin", customer="acme")
    await sql.execute(
        "UPDATE series SET reading_count = 3, first_reading_time = '2025-03-01Z',"
        " last_reading_time = '2025-03-02Z' WHERE series_id = 'empty'"
    )
    # On TimescaleDB the readings are then compressed, as the compression policy leaves old
    # chunks: check and rebuild read them there (they write none).
    await compress_every_chunk(sql)
    # Before the repair, queries over the rollups miss the old server's day.
    berlin = pb.SeriesSelector(labels={"site": "berlin"})
    assert await month_total(stub, berlin) < await sql_total(sql, "dense")

    # The rollups check finds the rollups short of the old server's day, whatever the catalog says.
    rollups = await run(database_url, "rollups", "check", "--series-id", "dense")
    assert rollups.returncode == 1
    assert rollups.stdout.splitlines()[-1] == "25 differences in 1 series (5 more not shown)"

    checked = await run(database_url, "catalog", "check", "--all", "--show", "50")
    assert checked.returncode == 1, checked.stderr
    out = checked.stdout
    assert "'dense' catalog: 384 readings, first 2025-03-02T00:00:00+00:00" in out
    assert "the readings give 480 readings, first 2025-03-01T00:00:00+00:00" in out
    assert "'dense' hourly 2025-03-01T00:00:00+00:00: stored nothing, the readings give total 5.0" in out
    assert "'unknown' is not in the catalog; the readings give 720 readings" in out
    assert "'miscounted' catalog: 53 readings" in out
    assert "'rowless' is not in the catalog; the readings give 24 readings" in out
    assert "'empty' catalog: 3 readings, first 2025-03-01T00:00:00+00:00" in out
    assert "the readings give 0 readings, first none, last none" in out
    # 'dense''s figures, its first day's 24 hours and the day, and four more series.
    assert out.splitlines()[-1] == "30 differences in 5 series"
    # By default the first 20 differences, then how many.
    bounded = (await run(database_url, "catalog", "check", "--all")).stdout.splitlines()
    assert len(bounded) == 21
    assert bounded[-1] == "30 differences in 5 series (10 more not shown)"

    # Series by id, in any order: only what they hold is checked, and mended.
    named = ["--series-id", "unknown", "--series-id", "miscounted", "--series-id", "unknown"]
    by_id = await run(database_url, "catalog", "check", *named)
    assert by_id.returncode == 1
    assert by_id.stdout.splitlines()[-1] == "2 differences in 2 series"
    mended = await run(database_url, "catalog", "rebuild", *named)
    assert mended.returncode == 0, mended.stderr
    assert mended.stdout.splitlines()[:2] == [
        "repaired 'miscounted': catalog 53 readings, first 2025-03-01T00:00:00+00:00,"
        " last 2025-03-02T23:00:00+00:00, now 48 readings, first 2025-03-01T00:00:00+00:00,"
        " last 2025-03-02T23:00:00+00:00",
        "repaired 'unknown': added to the catalog with 720 readings, first 2025-03-01T00:00:00+00:00,"
        " last 2025-03-30T23:00:00+00:00",
    ]
    assert (await run(database_url, "catalog", "check", *named)).returncode == 0

    rebuilt = await run(database_url, "catalog", "rebuild", "--all", "--batch-size", "2")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.splitlines()[:3] == [
        "repaired 'dense': catalog 384 readings, first 2025-03-02T00:00:00+00:00,"
        " last 2025-03-05T23:45:00+00:00, now 480 readings, first 2025-03-01T00:00:00+00:00,"
        " last 2025-03-05T23:45:00+00:00;"
        " rolled up again (25 rollup rows differed)",
        "repaired 'empty': catalog 3 readings, first 2025-03-01T00:00:00+00:00,"
        " last 2025-03-02T00:00:00+00:00, now 0 readings, first none, last none",
        "repaired 'rowless': added to the catalog with 24 readings, first 2025-03-01T00:00:00+00:00,"
        " last 2025-03-01T23:00:00+00:00",
    ]
    assert rebuilt.stdout.splitlines()[3].startswith("checked 5 series and repaired 3 series in ")
    clean = await run(database_url, "catalog", "check", "--all")
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout == "checked 5 series: the catalog and the rollups are those of the readings\n"
    await catalog_matches_readings(sql)
    # A series with no readings keeps its labels; one added has none; the rest are as they were.
    series = {
        row["series_id"]: row
        for row in await sql.fetch("SELECT series_id, labels::text, reading_count FROM series")
    }
    assert series["empty"]["labels"] == '{"site": "berlin", "customer": "acme"}'
    assert series["empty"]["reading_count"] == 0
    assert series["unknown"]["labels"] == "{}"
    # Answers of selectors now hold every series, and agree with plain SQL over the readings.
    assert await month_total(stub, berlin) == await sql_total(sql, "dense")
    everything = ["dense", "unknown", "miscounted", "rowless", "empty"]
    assert await month_total(stub, pb.SeriesSelector(series_ids=everything)) == await sql_total(
        sql, *everything
    )
    assert await month_total(stub, pb.SeriesSelector(series_ids=["unknown"])) == 720.0


async def test_dense_series_without_rollups_are_found_and_rolled_up(
    database_url: str, sql: asyncpg.Connection, stub: Stub
) -> None:
    # Stored before the rollups migration: dense, but neither flagged nor rolled up.
    await ingest(stub, batches(minute_readings("minutes", "2025-03-01", 180), 90))
    await ingest(stub, batches(hourly_readings("hours", "2025-03-01", 48), 48))
    await sql.execute("UPDATE series SET rolled_up = false")
    await sql.execute("DELETE FROM hourly_rollups")
    await sql.execute("DELETE FROM daily_rollups")
    checked = await run(database_url, "rollups", "check", "--all")
    assert checked.returncode == 1
    assert "'minutes' has no rollups, though an hour holds more than one of its readings" in checked.stdout
    assert "'hours'" not in checked.stdout
    catalog = await run(database_url, "catalog", "check", "--all")
    assert catalog.returncode == 1
    assert "'minutes' has no rollups" in catalog.stdout
    rebuilt = await run(database_url, "rollups", "rebuild", "--all")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("rebuilt the rollups of 'minutes' in ")
    assert await rolled_up(sql, "minutes")
    assert not await rolled_up(sql, "hours")
    assert (await run(database_url, "rollups", "check", "--all")).returncode == 0
    assert (await run(database_url, "catalog", "check", "--all")).returncode == 0
    await rollups_match_readings(sql)


async def test_a_repair_while_streams_write_the_series_stays_exact(
    database: Database, sql: asyncpg.Connection, stub: Stub
) -> None:
    # Imported here so that the CLI tests above run (and fail) on versions without it.
    from timeseries_aggregation.storage.series_catalog import repair_catalog

    await ingest(stub, batches(minute_readings("live", "2025-03-02", 120), 120))
    await old_server_writes(sql, "live", "2025-03-01 00:00", "2025-03-01 23:59", 0.5, "1 minute")
    release = asyncio.Event()

    async def paused() -> AsyncIterator[pb.IngestReadingsRequest]:
        # A whole chunk, written and not committed when the repair comes.
        yield pb.IngestReadingsRequest(readings=minute_readings("live", "2025-04-01", 20_000))
        await release.wait()
        yield pb.IngestReadingsRequest(readings=minute_readings("live", "2025-06-01", 30))

    stream = asyncio.ensure_future(stub.IngestReadings(paused()))
    await eventually(lambda: _one_stream_waits(sql), within=30)
    [drift] = await repair_catalog(database, ["live"])
    assert drift.derived.reading_count == 120 + 1440
    release.set()
    await stream
    await catalog_matches_readings(sql)
    # Streams and repairs of one series at once, in whatever order they meet.
    await old_server_writes(sql, "live", "2025-02-01 00:00", "2025-02-01 05:59", 0.25, "1 minute")
    streams = [
        ingest(stub, batches(minute_readings("live", f"2025-05-{day:02}", 600, scale=day), 200))
        for day in range(1, 5)
    ]
    repairs = [repair_catalog(database, ["live"]) for _ in range(4)]
    await asyncio.gather(*streams, *repairs)
    await catalog_matches_readings(sql)
    assert await repair_catalog(database, ["live"]) == []


async def _one_stream_waits(sql: asyncpg.Connection) -> None:
    assert await service_transactions_waiting(sql) == 1
