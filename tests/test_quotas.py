"""Each key's fair share: its streams, its write connections and its rate."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import TEST_POOL, server_config
from tests.support import (
    INGEST_LABELS,
    QUERY,
    add_series,
    batches,
    bearer,
    eventually,
    hourly_readings,
    metrics_port,
    scrape,
    service,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.readings import COPY_CHUNK_READINGS

pytestmark = pytest.mark.any_engine

GREEDY = new_key()
LOADER = new_key()
PACED = new_key()
# One message of this many readings makes a stream take a write connection.
CHUNK = COPY_CHUNK_READINGS + 1


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    ingest = frozenset({Scope.INGEST})
    lines = [
        key_file_line("greedy", ingest, GREEDY) + " streams=2",
        key_file_line("loader", ingest, LOADER),
        # Two calls, then one every thousand seconds: never another within a test.
        key_file_line("paced", frozenset({Scope.QUERY}), PACED) + " rate=0.001 burst=2",
    ]
    path.write_text("\n".join(lines))
    return path


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The google.rpc.RetryInfo delay of a refusal, in seconds."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            nanoseconds: int = retry.retry_delay.ToNanoseconds()
            return nanoseconds / 1e9
    raise AssertionError(f"no RetryInfo in {error}")


async def write_connections_in_use(database: Database, expected: int) -> None:
    pool = database.pools["write"]
    assert pool.get_size() - pool.get_idle_size() == expected


async def test_a_greedy_key_keeps_to_its_share_and_another_key_is_served(
    database_url: str, tmp_path: Path
) -> None:
    # Two write connections: by default a key may write with half of them, one.
    two_writers = dataclasses.replace(TEST_POOL, write_max_size=2, acquire_timeout_seconds=0.5)
    config = server_config(
        auth_mode=AUTH_API_KEY,
        api_keys_file=key_file(tmp_path),
        pool=two_writers,
        metrics_address="127.0.0.1:0",
    )
    async with (
        open_database(database_url, two_writers) as database,
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = service(channel)
        finished = [asyncio.Event(), asyncio.Event()]

        async def slow(readings: int, finish: asyncio.Event) -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("greedy", "2020-01-01", readings))
            await finish.wait()

        # The greedy key holds as many slow streams as it may, one of them writing.
        held = [
            asyncio.ensure_future(stub.IngestReadings(slow(readings, finish), metadata=bearer(GREEDY)))
            for readings, finish in zip((CHUNK, 1), finished, strict=True)
        ]
        await eventually(lambda: write_connections_in_use(database, 1), within=10)

        async def both_started() -> None:
            # A stream takes its share when it starts, in the same step as it is counted here.
            scraped = await scrape(metrics_port(running))
            assert scraped.value("grpc_server_started_total", **INGEST_LABELS) == 2

        await eventually(both_started, within=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.IngestReadings(
                iter(batches(hourly_readings("greedy", "2021-01-01", 1), 1)),
                metadata=bearer(GREEDY),
                timeout=10,
            )
        error = refused.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'greedy'" in (error.details() or "")
        assert "streams=2" in (error.details() or "")
        assert "retry in" in (error.details() or "")
        assert retry_delay(error) > 0

        # The other key's import is served, on the connection the greedy key must leave free.
        response = await stub.IngestReadings(
            iter(batches(hourly_readings("loader", "2020-01-01", CHUNK), 10_000)),
            metadata=bearer(LOADER),
            timeout=10,
        )
        assert response.readings_received == CHUNK

        # One after the other, each within the key's one write connection.
        for finish, stream, readings in zip(finished, held, (CHUNK, 1), strict=True):
            finish.set()
            assert (await stream).readings_received == readings


async def test_a_stream_over_its_keys_write_share_is_refused_with_retry_info(
    database_url: str, tmp_path: Path
) -> None:
    two_writers = dataclasses.replace(TEST_POOL, write_max_size=2, acquire_timeout_seconds=0.5)
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=key_file(tmp_path), pool=two_writers)
    async with (
        open_database(database_url, two_writers) as database,
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = service(channel)
        finish = asyncio.Event()

        async def slow() -> AsyncIterator[pb.IngestReadingsRequest]:
            yield pb.IngestReadingsRequest(readings=hourly_readings("greedy", "2020-01-01", CHUNK))
            await finish.wait()

        held = asyncio.ensure_future(stub.IngestReadings(slow(), metadata=bearer(GREEDY)))
        await eventually(lambda: write_connections_in_use(database, 1), within=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.IngestReadings(
                iter([pb.IngestReadingsRequest(readings=hourly_readings("greedy", "2021-01-01", CHUNK))]),
                metadata=bearer(GREEDY),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "writes=1" in (refused.value.details() or "")
        assert retry_delay(refused.value) > 0
        finish.set()
        assert (await held).readings_received == CHUNK


async def test_a_key_over_its_rate_is_refused_with_the_time_to_wait(
    database: Database, tmp_path: Path
) -> None:
    await add_series(database, "m1")
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=key_file(tmp_path))
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = service(channel)
        for _ in range(2):
            await stub.QueryAggregates(QUERY, metadata=bearer(PACED), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.QueryAggregates(QUERY, metadata=bearer(PACED), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details() or ""
        assert "'paced'" in details
        assert "rate=0.001" in details
        assert "burst=2" in details
        # A token comes every 1000 s; the one the third call wanted is almost that far away.
        assert 900 < retry_delay(refused.value) <= 1000
