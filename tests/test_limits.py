"""Limits, each enforced with the status code its reference names, and undecodable bytes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.conftest import TEST_POOL, server_config
from tests.support import (
    INGEST_LABELS,
    batches,
    eventually,
    field_violations,
    hourly_readings,
    metrics_port,
    scrape,
    service_transactions_waiting,
    writing_by_hand,
)
from tests.tcp_proxy import FreezableProxy
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.readings import COPY_CHUNK_READINGS

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

SERVICE = "/timeseries.v1.TimeseriesAggregationService/"


async def write_connections_in_use(database: Database, expected: int) -> None:
    pool = database.pools["write"]
    assert pool.get_size() - pool.get_idle_size() == expected


async def stored_count(database: Database) -> int:
    async with database.query_connection() as connection:
        count: int = await connection.fetchval("SELECT count(*) FROM readings")
    return count


# A chunk's worth of readings: a stream that has sent this many holds a write connection.
CHUNK = COPY_CHUNK_READINGS


async def test_streams_beyond_the_write_pool_wait_then_are_refused_as_exhausted(database_url: str) -> None:
    one_writer = dataclasses.replace(TEST_POOL, write_max_size=1, acquire_timeout_seconds=0.5)
    async with (
        open_database(database_url, one_writer) as database,
        grpc_server(database, server_config()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub: TimeseriesAggregationServiceAsyncStub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        finish = asyncio.Event()

        async def writing_then_held_open() -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", CHUNK))
            await finish.wait()

        first = asyncio.ensure_future(stub.IngestReadings(writing_then_held_open()))
        await eventually(lambda: write_connections_in_use(database, 1), within=10)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(iter(batches(hourly_readings("m2", "2025-01-01", 5), 5)))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry" in (raised.value.details() or "")
        # A full pool is not an outage: health stays SERVING and the held stream commits.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        finish.set()
        assert (await first).readings_received == CHUNK
        response = await stub.IngestReadings(iter(batches(hourly_readings("m2", "2025-01-01", 5), 5)))
        assert response.readings_received == 5
        assert await stored_count(database) == CHUNK + 5


async def test_streams_that_have_written_nothing_hold_no_connection(database_url: str) -> None:
    one_writer = dataclasses.replace(TEST_POOL, write_max_size=1, acquire_timeout_seconds=0.5)
    async with (
        open_database(database_url, one_writer) as database,
        grpc_server(database, server_config(metrics_address="127.0.0.1:0")) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        finish = asyncio.Event()

        async def idle(readings: int) -> AsyncIterator[pb.IngestReadingsRequest]:
            if readings:
                yield pb.IngestReadingsRequest(readings=hourly_readings("idle", "2024-01-01", readings))
            await finish.wait()

        # More idle streams than the pool has connections: silent ones and slow ones.
        idlers = [asyncio.ensure_future(stub.IngestReadings(idle(readings))) for readings in (0, 0, 3, 3)]

        async def all_started() -> None:
            scraped = await scrape(metrics_port(running))
            assert scraped.value("grpc_server_started_total", **INGEST_LABELS) == len(idlers)

        await eventually(all_started, within=10)
        response = await stub.IngestReadings(iter(batches(hourly_readings("m1", "2025-01-01", 24), 24)))
        assert response.readings_received == 24
        assert await stored_count(database) == 24
        finish.set()
        assert [(await idler).readings_received for idler in idlers] == [0, 0, 3, 3]


async def test_a_stream_that_stops_sending_is_rolled_back(database: Database) -> None:
    async with (
        grpc_server(database, server_config(stream_idle_timeout_seconds=0.5)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)

        async def stalls() -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 30_000))
            await asyncio.sleep(30)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(stalls(), timeout=20)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no readings for 0.5 s" in (raised.value.details() or "")
    assert await stored_count(database) == 0


async def test_messages_without_readings_do_not_keep_a_stream_open(database: Database) -> None:
    async with (
        grpc_server(database, server_config(stream_idle_timeout_seconds=0.5)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)

        async def empty_messages() -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 3))
            # Messages, but no progress: for ten times the idle timeout.
            for _ in range(100):
                await asyncio.sleep(0.05)
                yield pb.IngestReadingsRequest()

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(empty_messages(), timeout=20)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no readings for 0.5 s" in (raised.value.details() or "")
    assert await stored_count(database) == 0


async def test_a_stream_older_than_its_maximum_age_is_rolled_back(database: Database) -> None:
    config = server_config(stream_idle_timeout_seconds=30, stream_max_age_seconds=0.5)
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)

        async def trickle() -> AsyncIterator[pb.IngestReadingsRequest]:
            # A reading at a time, well within the idle timeout, for ten times the maximum age.
            for hour in range(100):
                yield pb.IngestReadingsRequest(
                    readings=hourly_readings("m1", f"2025-01-01T{hour % 24:02}:00", 1)
                )
                await asyncio.sleep(0.05)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(trickle(), timeout=20)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "open longer than 0.5 s" in (raised.value.details() or "")
    assert await stored_count(database) == 0


async def test_messages_over_the_size_limit_are_resource_exhausted(database: Database) -> None:
    async with (
        grpc_server(database, server_config(max_message_bytes=64 * 1024)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        small = batches(hourly_readings("m1", "2025-01-01", 100), 100)
        big = batches(hourly_readings("m1", "2026-01-01", 5_000), 5_000)  # about 150 kB
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(iter(small + big))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await stored_count(database) == 0


@pytest.mark.parametrize(
    ("method", "streaming"),
    [("IngestReadings", True), ("QueryAggregates", False), ("ListQueryHistory", False)],
)
async def test_undecodable_requests_are_invalid_argument(
    database: Database, channel: grpc.aio.Channel, method: str, streaming: bool
) -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length that runs past the end
    request: Awaitable[Any]
    if streaming:
        request = channel.stream_unary(SERVICE + method)(iter([garbage]))  # type: ignore[arg-type]
    else:
        request = channel.unary_unary(SERVICE + method)(garbage)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await request
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid timeseries.v1." in (raised.value.details() or "")
    assert await stored_count(database) == 0


# Status messages and details travel in trailing metadata, which gRPC clients cap at 8 KiB by
# default; a refusal of a huge value must name the field and stay far below that.
ERROR_BUDGET_BYTES = 4 * 1024


def error_size(error: grpc.aio.AioRpcError) -> int:
    """The bytes an error's message and google.rpc.Status details take."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    size: int = status.ByteSize()
    return len((error.details() or "").encode()) + size


async def test_a_huge_invalid_time_zone_is_refused_with_a_bounded_error(
    stub: TimeseriesAggregationServiceAsyncStub,
) -> None:
    time_zone = "Mars/" + "x" * (1024 * 1024)
    request = pb.QueryAggregatesRequest(
        series_id="m1", granularity=pb.GRANULARITY_DAY_OF_MONTH, time_zone=time_zone
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    assert field_violations(raised.value) == ["time_zone"]
    assert "'Mars/xxx" in (raised.value.details() or "")
    assert f"({len(time_zone):,} characters)" in (raised.value.details() or "")
    assert error_size(raised.value) < ERROR_BUDGET_BYTES


async def test_a_huge_update_mask_path_is_refused_with_a_bounded_error(
    stub: TimeseriesAggregationServiceAsyncStub,
) -> None:
    path = "labels." + "y" * (4 * 1024 * 1024)
    request = pb.UpdateSeriesRequest(series=pb.Series(series_id="m1"), update_mask=FieldMask(paths=[path]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateSeries(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    assert field_violations(raised.value) == ["update_mask.paths[0]"]
    assert "'labels.yyy" in (raised.value.details() or "")
    assert error_size(raised.value) < ERROR_BUDGET_BYTES


async def test_a_huge_invalid_label_key_is_refused_with_a_bounded_error(
    stub: TimeseriesAggregationServiceAsyncStub,
) -> None:
    key = "K" * (1024 * 1024)
    request = pb.UpdateSeriesRequest(series=pb.Series(series_id="m1", labels={key: "v"}))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateSeries(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    [field] = field_violations(raised.value)
    assert field.startswith("series.labels['KKK")
    assert error_size(raised.value) < ERROR_BUDGET_BYTES


async def test_a_statement_over_the_timeout_is_cancelled_and_reported(
    database: Database, database_url: str
) -> None:
    async with database.query_connection() as connection, writing_by_hand(connection):
        await connection.execute(
            "INSERT INTO readings SELECT 'm1', t, 1.0 FROM generate_series("
            "'2015-01-01'::timestamptz, '2024-12-31 23:00', '1 hour') AS t"
        )
        # Its catalog row, as ingest would have written it: without one the query is NOT_FOUND
        # before any statement is slow.
        await connection.execute(
            "INSERT INTO series (series_id, first_reading_time, last_reading_time, reading_count)"
            " SELECT series_id, min(time), max(time), count(*) FROM readings GROUP BY series_id"
        )
    # 20 ms is plenty for the start-up statements and far too short for a statement that waits:
    # the query is cancelled in the database and the caller told to retry.
    impatient = dataclasses.replace(TEST_POOL, statement_timeout_seconds=0.02)
    hourly = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_HOURLY, page_size=10_000)
    async with (
        open_database(database_url, impatient) as impatient_database,
        grpc_server(impatient_database, server_config()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        hourly.time_zone = "Europe/Berlin"
        # A page reads no more than it returns, which can take less than 20 ms: a writer holding
        # the table makes the query's statement wait, as long as any slow statement runs.
        async with database.query_connection() as blocker, blocker.transaction():
            await blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.QueryAggregates(hourly)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    async with database.query_connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM query_history") == 0


async def test_keepalive_drops_a_client_that_vanished_mid_stream(database: Database) -> None:
    # The stream idle timeout is far away: only keepalive can end this stream.
    config = server_config(
        keepalive_time_seconds=1.0, keepalive_timeout_seconds=1.0, stream_idle_timeout_seconds=600.0
    )
    async with (
        grpc_server(database, config) as running,
        FreezableProxy("127.0.0.1", running.port).running() as proxy,
        grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        sent = asyncio.Event()

        async def then_silence() -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 30_000))
            sent.set()
            await asyncio.sleep(3600)

        call = stub.IngestReadings(then_silence())
        await sent.wait()

        async def stream_waiting(count: int) -> None:
            async with database.query_connection() as connection:
                assert await service_transactions_waiting(connection) == count

        await eventually(lambda: stream_waiting(1))
        proxy.freeze()

        async def stream_gone() -> None:
            await stream_waiting(0)

        await eventually(stream_gone, within=15)
        call.cancel()
    assert await stored_count(database) == 0
