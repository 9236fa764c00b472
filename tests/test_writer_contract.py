"""The schema contract between builds: a writer that does not keep what the database requires
is refused by the database itself, whatever its code, and this build says so when the schema
moves past it (storage/writer_contract.py, migration 0013)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import server_config
from tests.server_process import free_port, server_env, start, stop
from tests.support import eventually, hourly_readings, ingest, reading, ts, writing_by_hand
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.writer_contract import (
    SESSION_SETTINGS,
    WRITER_CONTRACT,
    is_contract_refusal,
    required_contract,
    set_required_contract,
)

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# The statements a build from before contracts sends (its ingest COPY, its upsert of keys
# already stored, its DeleteReadings and retention): they name series_id, time and quantity_kwh.
OLD_UPSERT = (
    "INSERT INTO readings (series_id, time, quantity_kwh) VALUES ($1, $2, $3) "
    "ON CONFLICT (series_id, time) DO UPDATE SET quantity_kwh = EXCLUDED.quantity_kwh"
)
OLD_DELETE = "DELETE FROM readings WHERE series_id = $1 AND time >= $2 AND time < $3"
JANUARY = datetime(2025, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2025, 2, 1, tzinfo=UTC)


@pytest.fixture
async def newer_contract(sql: asyncpg.Connection) -> AsyncIterator[int]:
    """The database requires a contract newer than this build's, as after another replica of
    a newer build migrated; as before afterwards (test databases are reused)."""
    await set_required_contract(sql, WRITER_CONTRACT + 1)
    try:
        yield WRITER_CONTRACT + 1
    finally:
        await set_required_contract(sql, WRITER_CONTRACT)


async def readings_of(sql: asyncpg.Connection, series_id: str) -> list[tuple[datetime, float]]:
    rows = await sql.fetch(
        "SELECT time, quantity_kwh FROM readings WHERE series_id = $1 ORDER BY time", series_id
    )
    return [(row["time"], row["quantity_kwh"]) for row in rows]


async def test_a_writer_that_declares_no_contract_is_refused_and_writes_nothing(
    stub: TimeseriesAggregationServiceAsyncStub, database_url: str, sql: asyncpg.Connection
) -> None:
    await ingest(stub, [pb.IngestReadingsRequest(readings=hourly_readings("m", JANUARY, 3, 1.0))])
    before = await readings_of(sql, "m")
    old = await asyncpg.connect(database_url)  # declares nothing, as every older build
    try:
        attempts = {
            "COPY": old.copy_records_to_table(
                "readings", records=[("m", FEBRUARY, 5.0)], columns=["series_id", "time", "quantity_kwh"]
            ),
            "INSERT of a new key": old.execute(OLD_UPSERT, "m", FEBRUARY, 5.0),
            "upsert of a stored key": old.execute(OLD_UPSERT, "m", JANUARY, 5.0),
            "DELETE": old.execute(OLD_DELETE, "m", JANUARY, FEBRUARY),
        }
        for what, attempt in attempts.items():
            with pytest.raises(asyncpg.PostgresError) as refused:
                await attempt
            assert is_contract_refusal(refused.value), what
            assert "requires writers of schema contract 1" in str(refused.value), what
            assert "declares none" in str(refused.value), what
        # Reading stays open to it: its answers come from the readings, which are exact.
        assert await old.fetchval("SELECT sum(quantity_kwh) FROM readings WHERE series_id = 'm'") == 3.0
    finally:
        await old.close()
    assert await readings_of(sql, "m") == before


async def test_a_session_declaring_a_contract_too_old_is_refused_too(
    database_url: str, newer_contract: int
) -> None:
    # A session of this build, as it writes (on Citus the shards learn the contract from SET LOCAL).
    older = await asyncpg.connect(database_url, server_settings=SESSION_SETTINGS)
    try:

        async def write() -> None:
            async with writing_by_hand(older):
                await older.execute(OLD_UPSERT, "m", JANUARY, 1.0)

        with pytest.raises(asyncpg.PostgresError) as refused:
            await write()
    finally:
        await older.close()
    assert is_contract_refusal(refused.value)
    assert f"declares contract {WRITER_CONTRACT}" in str(refused.value)
    assert f"requires writers of schema contract {newer_contract}" in str(refused.value)


async def health_of(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return int(response.status)


async def test_a_schema_that_moves_past_a_running_server_fails_its_writes_and_its_health(
    database: Database, sql: asyncpg.Connection
) -> None:
    async with (
        grpc_server(database, server_config()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub: TimeseriesAggregationServiceAsyncStub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        await ingest(stub, [pb.IngestReadingsRequest(readings=hourly_readings("m", JANUARY, 24, 2.0))])
        # Another replica, of a newer build, migrates to a newer contract.
        await set_required_contract(sql, WRITER_CONTRACT + 1)
        try:
            await refused_writes_and_exact_reads(stub, channel, sql)
        finally:
            await set_required_contract(sql, WRITER_CONTRACT)


async def refused_writes_and_exact_reads(
    stub: TimeseriesAggregationServiceAsyncStub, channel: grpc.aio.Channel, sql: asyncpg.Connection
) -> None:
    """Every write FAILED_PRECONDITION naming both contracts, nothing written, queries exact,
    and health NOT_SERVING, so that a load balancer sends writes to an upgraded replica."""
    for call in (
        ingest(stub, [pb.IngestReadingsRequest(readings=[reading("m", "2025-01-02T00:00:00Z", 1.0)])]),
        stub.DeleteReadings(
            pb.DeleteReadingsRequest(
                selector=pb.SeriesSelector(series_ids=["m"]),
                start_time=ts(JANUARY),
                end_time=ts(FEBRUARY),
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = refused.value.details() or ""
        assert f"requires schema contract {WRITER_CONTRACT + 1}" in message
        assert f"keeps contract {WRITER_CONTRACT}" in message
    # Nothing was written or deleted; queries still answer, from exact readings.
    assert len(await readings_of(sql, "m")) == 24
    answer = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            series_id="m",
            granularity=pb.GRANULARITY_DAY_OF_MONTH,
            start_time=ts(JANUARY),
            end_time=ts(FEBRUARY),
        )
    )
    assert [bucket.total_quantity_kwh for bucket in answer.buckets] == [48.0]

    async def not_serving() -> None:
        assert await health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving)


async def test_a_server_started_on_a_newer_schema_says_so_in_one_line(
    database_url: str,
    sql: asyncpg.Connection,
    newer_contract: int,
    tmp_path: Path,
    cleanup: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    cleanup.append(start(server_env(database_url, port, LOG_FORMAT="text"), log))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

        async def not_serving() -> None:
            assert await health_of(channel) == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving, within=30, interval=0.2)
        stub: TimeseriesAggregationServiceAsyncStub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ingest(stub, [pb.IngestReadingsRequest(readings=hourly_readings("m", JANUARY, 2))])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await stop(cleanup[0]) == 0
    newer = [line for line in log.read_text().splitlines() if "requires schema contract" in line]
    assert len(newer) == 1, log.read_text()
    assert f"requires schema contract {newer_contract}" in newer[0]
    assert f"this build keeps {WRITER_CONTRACT}" in newer[0]
    # Starting did not lower what the database requires.
    assert await required_contract(sql) == newer_contract


async def schema_command(database_url: str, command: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "timeseries_aggregation", "schema", command],
        env={**os.environ, "TIMESERIES_AGGREGATION_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def quarter_hours(series_id: str, first: datetime, count: int, kwh: float) -> list[pb.Reading]:
    return [reading(series_id, first + timedelta(minutes=15 * number), kwh) for number in range(count)]


async def daily_totals(stub: TimeseriesAggregationServiceAsyncStub, series_id: str) -> list[float]:
    answer = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            series_id=series_id,
            granularity=pb.GRANULARITY_DAY_OF_MONTH,
            start_time=ts(JANUARY),
            end_time=ts(FEBRUARY),
        )
    )
    return [bucket.total_quantity_kwh for bucket in answer.buckets]


async def plain_daily_totals(sql: asyncpg.Connection, series_id: str) -> list[float]:
    rows = await sql.fetch(
        "SELECT sum(quantity_kwh) FROM readings WHERE series_id = $1 AND time >= $2 AND time < $3 "
        "GROUP BY date_trunc('day', time AT TIME ZONE 'UTC') "
        "ORDER BY date_trunc('day', time AT TIME ZONE 'UTC')",
        series_id,
        JANUARY,
        FEBRUARY,
    )
    return [row[0] for row in rows]


async def test_a_rollback_answers_from_the_readings_until_this_build_requires_its_contract_again(
    database: Database,
    database_url: str,
    sql: asyncpg.Connection,
    stub: TimeseriesAggregationServiceAsyncStub,
) -> None:
    # A dense meter this build rolled up.
    await ingest(stub, [pb.IngestReadingsRequest(readings=quarter_hours("dense", JANUARY, 96 * 3, 0.25))])
    assert await sql.fetchval("SELECT rolled_up FROM series WHERE series_id = 'dense'")
    allowed = await schema_command(database_url, "allow-older-writers")
    assert allowed.returncode == 0, allowed.stderr
    assert not await sql.fetchval("SELECT rolled_up FROM series WHERE series_id = 'dense'")
    # An older build writes the meter's second day again, keeping neither catalog nor rollups.
    old = await asyncpg.connect(database_url)
    try:
        for moment in (JANUARY + timedelta(days=1, minutes=15 * number) for number in range(96)):
            await old.execute(OLD_UPSERT, "dense", moment, 1.0)
    finally:
        await old.close()
    # This build's replicas answer from the readings, and a dense stream switches nothing on.
    assert await daily_totals(stub, "dense") == await plain_daily_totals(sql, "dense") == [24.0, 96.0, 24.0]
    await ingest(stub, [pb.IngestReadingsRequest(readings=quarter_hours("dense", FEBRUARY, 8, 0.5))])
    assert not await sql.fetchval("SELECT rolled_up FROM series WHERE series_id = 'dense'")
    status = await schema_command(database_url, "status")
    assert "older writers allowed" in status.stdout
    # A server of this build starting again (what serve() does once the database is open).
    await database.require_this_contract()
    assert await required_contract(sql) == WRITER_CONTRACT
    assert await daily_totals(stub, "dense") == await plain_daily_totals(sql, "dense")
