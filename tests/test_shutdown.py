"""SIGTERM: NOT_SERVING at once, no new calls, and in-flight streams commit or roll back whole."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.server_process import serve_on
from tests.support import batches, eventually, hourly_readings
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def stored(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM readings")
    finally:
        await connection.close()
    return count


async def stream_transaction_open(database_url: str) -> None:
    """The service holds a transaction open, waiting for the rest of a stream it has begun to write."""
    connection = await asyncpg.connect(database_url)
    try:
        open_transactions: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'timeseries-aggregation' AND state = 'idle in transaction'"
        )
    finally:
        await connection.close()
    assert open_transactions == 1


async def run_stream_through_sigterm(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], grace: float, pace: float
) -> tuple[pb.IngestReadingsResponse | grpc.aio.AioRpcError, int, list[int]]:
    """Start a server, a stream sending 20 messages `pace` seconds apart, SIGTERM after the
    third; returns the stream's outcome, the exit code and the health statuses watched."""
    process, port = await serve_on(
        database_url, tmp_path / "server.log", cleanup, SHUTDOWN_GRACE_SECONDS=str(grace)
    )
    statuses: list[int] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())

        async def follow_health() -> None:
            # The watch ends, with an error or without, when the server stops.
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for update in watch:
                    statuses.append(update.status)

        follower = asyncio.create_task(follow_health())
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        third_sent = asyncio.Event()

        async def paced() -> AsyncIterator[pb.IngestReadingsRequest]:
            for number, request in enumerate(batches(hourly_readings("m1", "2025-01-01", 20_000), 1_000)):
                yield request
                if number == 2:
                    third_sent.set()
                await asyncio.sleep(pace)

        call = stub.IngestReadings(paced())
        await third_sent.wait()
        process.send_signal(signal.SIGTERM)

        async def new_calls_refused() -> None:
            query = stub.QueryAggregates(
                pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_MONTHLY), timeout=5
            )
            assert await query.code() == grpc.StatusCode.UNAVAILABLE

        await eventually(new_calls_refused, within=10)
        outcome: pb.IngestReadingsResponse | grpc.aio.AioRpcError
        try:
            outcome = await call
        except grpc.aio.AioRpcError as error:
            outcome = error
        exit_code = await asyncio.to_thread(process.wait, 30)
        await follower
    return outcome, exit_code, statuses


async def test_sigterm_lets_a_stream_that_fits_the_grace_period_commit(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    outcome, exit_code, statuses = await run_stream_through_sigterm(
        database_url, tmp_path, cleanup, grace=20, pace=0.05
    )
    assert isinstance(outcome, pb.IngestReadingsResponse)
    assert outcome.readings_received == 20_000
    assert exit_code == 0
    assert statuses[:2] == [SERVING, NOT_SERVING]
    assert await stored(database_url) == 20_000


async def test_sigterm_rolls_back_a_stream_that_outlasts_the_grace_period(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    outcome, exit_code, statuses = await run_stream_through_sigterm(
        database_url, tmp_path, cleanup, grace=1, pace=0.5
    )
    assert isinstance(outcome, grpc.aio.AioRpcError)
    assert exit_code == 0
    assert statuses[:2] == [SERVING, NOT_SERVING]
    assert await stored(database_url) == 0


async def test_sigterm_ends_health_watches_instead_of_draining_them(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    # A watch never ends by itself: if the server waited for it, it would wait out the grace period.
    process, port = await serve_on(
        database_url, tmp_path / "server.log", cleanup, SHUTDOWN_GRACE_SECONDS="600"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        statuses = [(await watch.read()).status]
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 60)
        while (update := await watch.read()) != grpc.aio.EOF:
            statuses.append(update.status)
        code = await watch.code()
    assert exit_code == 0
    assert statuses == [SERVING, NOT_SERVING]
    assert code == grpc.StatusCode.OK


async def test_a_killed_server_leaves_nothing_of_its_open_stream(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    process, port = await serve_on(database_url, tmp_path / "server.log", cleanup)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        acknowledged = await stub.IngestReadings(
            iter(batches(hourly_readings("kept", "2025-01-01", 500), 100))
        )
        assert acknowledged.readings_received == 500
        sent = asyncio.Event()

        async def open_stream() -> AsyncIterator[pb.IngestReadingsRequest]:
            for request in batches(hourly_readings("lost", "2025-01-01", 30_000), 10_000):
                yield request
            sent.set()
            await asyncio.sleep(3600)

        call = stub.IngestReadings(open_stream())
        await sent.wait()
        await eventually(lambda: stream_transaction_open(database_url), within=10)
        process.send_signal(signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    await asyncio.to_thread(process.wait, 30)

    async def only_the_acknowledged_readings() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch("SELECT series_id, count(*) FROM readings GROUP BY 1")
            open_transactions = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            )
        finally:
            await connection.close()
        assert [tuple(row) for row in rows] == [("kept", 500)]
        assert open_transactions == 0

    await eventually(only_the_acknowledged_readings, within=10)
