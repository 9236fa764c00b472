"""The client helpers: credentials from arguments or the environment, and message building."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.conftest import server_config
from tests.server_process import free_port
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    AsyncTimeseriesClient,
    Reading,
    ReadingLike,
    RetryPolicy,
    TimeseriesClient,
    auth_metadata,
    row_messages,
    series_messages,
)
from timeseries_aggregation.storage.database import Database


def test_api_key_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    assert auth_metadata() == ()
    assert auth_metadata("tsa_given") == (("authorization", "Bearer tsa_given"),)
    monkeypatch.setenv(API_KEY_VARIABLE, "tsa_from_env")
    assert auth_metadata() == (("authorization", "Bearer tsa_from_env"),)
    assert auth_metadata("tsa_given") == (("authorization", "Bearer tsa_given"),)


def test_series_messages_split_columns_into_messages() -> None:
    times = np.arange(5, dtype=np.int64) * 3_600_000_000
    messages = list(series_messages("m", times, [1.0, 2.0, 3.0, 4.0, 5.0], 2))
    assert [len(m.series_readings[0].time_unix_micros) for m in messages] == [2, 2, 1]
    assert list(messages[2].series_readings[0].quantity_kwh) == [5.0]
    assert {m.series_readings[0].series_id for m in messages} == {"m"}
    with pytest.raises(ValueError, match="same length"):
        list(series_messages("m", times, [1.0], 2))


def test_row_messages_carry_microseconds_as_timestamps() -> None:
    [message] = list(row_messages([("m", 1_700_000_000_123_456, 2.5)], 10))
    [reading] = message.readings
    assert (reading.time.seconds, reading.time.nanos) == (1_700_000_000, 123_456_000)
    assert (reading.series_id, reading.quantity_kwh) == ("m", 2.5)


async def test_blocking_client_ingests_queries_and_pages(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    readings: list[ReadingLike] = [("m1", start + timedelta(hours=hour), 2.0) for hour in range(72)]
    readings.append(Reading("m1", start, 5.0))  # the last write of a key wins

    def work() -> tuple[int, list[tuple[str, float]], list[str]]:
        with TimeseriesClient(target, timeout_seconds=10) as client:
            response = client.ingest(readings, batch_size=10)
            buckets = [
                (bucket.period, bucket.total_quantity_kwh)
                for bucket in client.query("m1", "daily", page_size=1, time_zone="UTC")
            ]
            callers = [entry.series_id for entry in client.history(page_size=1, limit=2)]
        return response.readings_received, buckets, callers

    received, buckets, history = await asyncio.to_thread(work)
    assert received == 73
    assert buckets == [("2025-01-01", 51.0), ("2025-01-02", 48.0), ("2025-01-03", 48.0)]
    assert history == ["m1", "m1"]


async def test_async_client_takes_async_iterables_and_pages(server: RunningServer) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)

    async def readings() -> AsyncIterator[Reading]:
        for hour in range(48):
            yield Reading("a1", start + timedelta(hours=hour), 1.5)

    async with AsyncTimeseriesClient(f"127.0.0.1:{server.port}", timeout_seconds=10) as client:
        response = await client.ingest(readings(), batch_size=7)
        assert (response.readings_received, response.messages_received) == (48, 7)
        monthly = [bucket async for bucket in client.query("a1", "monthly")]
        assert [(b.period, b.total_quantity_kwh, b.reading_count) for b in monthly] == [("2025-03", 72.0, 48)]
        hourly = [bucket async for bucket in client.query("a1", "hourly", page_size=5, start_time=start)]
        assert len(hourly) == 48
        entries = [entry async for entry in client.history(limit=3)]
        assert [entry.granularity for entry in entries] == [pb.GRANULARITY_HOURLY] * 3


async def test_calls_are_retried_until_the_server_comes_up(database: Database) -> None:
    port = free_port()
    patient = RetryPolicy(max_attempts=20, initial_backoff_seconds=0.1, max_backoff_seconds=0.3)
    async with AsyncTimeseriesClient(f"127.0.0.1:{port}", timeout_seconds=5, retry=patient) as client:
        early = asyncio.ensure_future(client.ingest([("r1", datetime(2025, 1, 1, tzinfo=UTC), 1.0)]))
        await asyncio.sleep(0.8)
        assert not early.done()
        async with grpc_server(database, server_config(listen_address=f"127.0.0.1:{port}")):
            response = await early
            assert response.readings_received == 1
            assert [b.reading_count async for b in client.query("r1", "daily")] == [1]


def test_retry_policy_backs_off_exponentially_with_jitter() -> None:
    delays = list(RetryPolicy(max_attempts=5, initial_backoff_seconds=0.1, max_backoff_seconds=0.3).delays())
    assert len(delays) == 4
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, [0.1, 0.2, 0.3, 0.3], strict=True))
