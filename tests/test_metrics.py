"""The Prometheus endpoint, scraped over real HTTP before and after real calls."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_POOL, server_config
from tests.support import (
    HISTORY_LABELS,
    INGEST_LABELS,
    QUERY_LABELS,
    eventually,
    hourly_readings,
    ingest,
    metrics_port,
    reading,
    scrape,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.readings import COPY_CHUNK_READINGS
from timeseries_aggregation.storage.schema import migration_scripts

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


@pytest.fixture
async def metered(database: Database) -> AsyncIterator[RunningServer]:
    async with grpc_server(database, server_config(metrics_address="127.0.0.1:0")) as running:
        yield running


@pytest.fixture
async def metered_stub(metered: RunningServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        yield pb_grpc.TimeseriesAggregationServiceStub(channel)


async def test_calls_move_the_rpc_and_ingest_metrics(metered: RunningServer, metered_stub: Stub) -> None:
    port = metrics_port(metered)
    before = await scrape(port)
    columns = pb.SeriesReadings(series_id="m2", time_unix_micros=[0, 3_600_000_000], quantity_kwh=[1.0, 2.0])
    await ingest(
        metered_stub,
        [
            pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 3)),
            pb.IngestReadingsRequest(series_readings=[columns]),
        ],
    )
    await metered_stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_DAY_OF_MONTH)
    )
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await metered_stub.QueryAggregates(pb.QueryAggregatesRequest(series_id="m1"))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await metered_stub.ListQueryHistory(pb.ListQueryHistoryRequest())
    after = await scrape(port)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("grpc_server_started_total", **INGEST_LABELS) == 1
    assert moved("grpc_server_handled_total", **INGEST_LABELS, grpc_code="OK") == 1
    assert moved("grpc_server_started_total", **QUERY_LABELS) == 2
    assert moved("grpc_server_handled_total", **QUERY_LABELS, grpc_code="OK") == 1
    assert moved("grpc_server_handled_total", **QUERY_LABELS, grpc_code="INVALID_ARGUMENT") == 1
    assert moved("grpc_server_handled_total", **HISTORY_LABELS, grpc_code="OK") == 1
    assert moved("grpc_server_handling_seconds_count", **QUERY_LABELS) == 2
    assert moved("grpc_server_handling_seconds_count", **INGEST_LABELS) == 1
    assert moved("grpc_server_handling_seconds_sum", **QUERY_LABELS) > 0
    assert moved("grpc_server_handling_seconds_bucket", **QUERY_LABELS, le="+Inf") == 2
    assert moved("timeseries_aggregation_readings_ingested_total") == 5
    assert moved("timeseries_aggregation_rows_written_total") == 5
    assert moved("timeseries_aggregation_ingest_message_readings_count") == 2
    assert moved("timeseries_aggregation_ingest_message_readings_sum") == 5
    assert moved("timeseries_aggregation_ingest_message_readings_bucket", le="1.0") == 0
    assert moved("timeseries_aggregation_ingest_message_readings_bucket", le="10.0") == 2


async def test_a_failed_stream_counts_its_messages_but_ingests_nothing(
    metered: RunningServer, metered_stub: Stub
) -> None:
    port = metrics_port(metered)
    before = await scrape(port)
    broken = pb.IngestReadingsRequest(readings=[reading("m1", "2025-01-01T01:00", math.nan)])
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await ingest(
            metered_stub, [pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 4)), broken]
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = await scrape(port)

    assert after.value("grpc_server_handled_total", **INGEST_LABELS, grpc_code="INVALID_ARGUMENT") == 1
    assert after.value("timeseries_aggregation_readings_ingested_total") == before.value(
        "timeseries_aggregation_readings_ingested_total"
    )
    assert after.value("timeseries_aggregation_ingest_message_readings_sum") == 5
    assert after.value("timeseries_aggregation_rows_written_total") == before.value(
        "timeseries_aggregation_rows_written_total"
    )


async def test_a_stream_that_wrote_and_went_idle_holds_its_connection_until_it_times_out(
    database: Database,
) -> None:
    config = server_config(metrics_address="127.0.0.1:0", stream_idle_timeout_seconds=1.0)
    first_sent = asyncio.Event()

    async def stalled() -> AsyncIterator[pb.IngestReadingsRequest]:
        yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", COPY_CHUNK_READINGS))
        first_sent.set()
        await asyncio.Event().wait()

    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        port = metrics_port(running)
        call = pb_grpc.TimeseriesAggregationServiceStub(channel).IngestReadings(stalled())

        async def write_connection_in_use() -> None:
            in_use = (await scrape(port)).value(
                "timeseries_aggregation_db_pool_connections_in_use", pool="write"
            )
            assert in_use == 1

        await first_sent.wait()
        await eventually(write_connection_in_use, within=0.9, interval=0.05)
        with pytest.raises(grpc.aio.AioRpcError) as idle:
            await call
        assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        after = await scrape(port)

    assert after.value("timeseries_aggregation_db_pool_connections_in_use", pool="write") == 0
    assert after.value("grpc_server_handled_total", **INGEST_LABELS, grpc_code="DEADLINE_EXCEEDED") == 1
    assert after.value("timeseries_aggregation_readings_ingested_total") == 0


async def test_a_call_the_client_cancels_counts_as_cancelled(metered: RunningServer) -> None:
    watch = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Watch", "grpc_type": "server_stream"}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        async for response in call:
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            break
        call.cancel()

    async def counted() -> None:
        metrics = await scrape(metrics_port(metered))
        assert metrics.value("grpc_server_handled_total", **watch, grpc_code="CANCELLED") == 1
        assert metrics.value("grpc_server_handling_seconds_count", **watch) == 1

    await eventually(counted, within=5.0)


async def test_pool_sizes_and_migration_version_are_exported(metered: RunningServer) -> None:
    metrics = await scrape(metrics_port(metered))

    for pool, max_size in (("write", TEST_POOL.write_max_size), ("query", TEST_POOL.max_size)):
        assert metrics.value("timeseries_aggregation_db_pool_connections_max", pool=pool) == max_size
        in_use = metrics.value("timeseries_aggregation_db_pool_connections_in_use", pool=pool)
        idle = metrics.value("timeseries_aggregation_db_pool_connections_idle", pool=pool)
        assert in_use >= 0
        assert 1 <= in_use + idle <= max_size
    newest = migration_scripts()[-1][0]
    assert metrics.value("timeseries_aggregation_schema_migration_version", migration=newest) == int(
        newest.split("_")[0]
    )
    assert metrics.value("process_resident_memory_bytes") > 0


async def test_servers_in_one_process_count_apart(database: Database, metered: RunningServer) -> None:
    async with (
        grpc_server(database, server_config(metrics_address="127.0.0.1:0")) as other,
        grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel,
    ):
        other_port = metrics_port(other)
        assert other_port != metrics_port(metered)
        await pb_grpc.TimeseriesAggregationServiceStub(channel).ListQueryHistory(pb.ListQueryHistoryRequest())
        assert (await scrape(other_port)).value(
            "grpc_server_handled_total", **HISTORY_LABELS, grpc_code="OK"
        ) == 1
        assert (await scrape(metrics_port(metered))).value(
            "grpc_server_handled_total", **HISTORY_LABELS, grpc_code="OK"
        ) == 0


async def test_metrics_are_off_unless_an_address_is_set(server: RunningServer) -> None:
    assert server.metrics_port is None


async def test_the_endpoint_closes_with_the_server(database: Database) -> None:
    async with grpc_server(database, server_config(metrics_address="127.0.0.1:0")) as running:
        port = metrics_port(running)
        await scrape(port)
    with pytest.raises(urllib.error.URLError):
        await scrape(port)


async def test_a_taken_metrics_port_stops_the_start_with_a_message_naming_it(database: Database) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError, match=f"cannot serve metrics on {address}: "):
            async with grpc_server(database, server_config(metrics_address=address)):
                pass


async def test_calls_waiting_for_a_connection_are_exported(database_url: str) -> None:
    one_connection = dataclasses.replace(
        TEST_POOL, min_size=1, max_size=1, write_max_size=1, acquire_timeout_seconds=10.0
    )
    async with (
        open_database(database_url, one_connection) as database,
        grpc_server(database, server_config(metrics_address="127.0.0.1:0")) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def held() -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", COPY_CHUNK_READINGS))
            holding.set()
            await release.wait()

        first = asyncio.ensure_future(stub.IngestReadings(held()))
        await holding.wait()

        async def first_holds_the_connection() -> None:
            metrics = await scrape(metrics_port(running))
            assert metrics.value("timeseries_aggregation_db_pool_connections_in_use", pool="write") == 1

        await eventually(first_holds_the_connection, within=5)
        second = asyncio.ensure_future(
            stub.IngestReadings(
                iter([pb.IngestReadingsRequest(readings=hourly_readings("m2", "2025-01-01", 3))])
            )
        )

        async def one_waits() -> None:
            metrics = await scrape(metrics_port(running))
            assert metrics.value("timeseries_aggregation_db_pool_waiting_calls", pool="write") == 1
            assert metrics.value("timeseries_aggregation_db_pool_connections_in_use", pool="write") == 1

        await eventually(one_waits, within=5)
        release.set()
        assert (await first).readings_received == COPY_CHUNK_READINGS
        assert (await second).readings_received == 3
        metrics = await scrape(metrics_port(running))
        assert metrics.value("timeseries_aggregation_db_pool_waiting_calls", pool="write") == 0
