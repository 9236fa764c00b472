"""Bounded memory on the fast path: a long stream does not grow the server process."""

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import numpy as np
import psutil

from tests.server_process import serve_on, stop
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client import series_messages

MIB = 1024 * 1024
READINGS = 2_000_000
# What the server may add to its idle RSS while the stream runs: two chunks in flight, one
# being gathered, gRPC's buffers and the allocator's slack are a few MiB; holding the
# stream's 2,000,000 readings would take far more (about 30 MiB as bare columns, hundreds as
# Python objects).
ALLOWED_GROWTH = 64 * MIB


def messages() -> Iterator[pb.IngestReadingsRequest]:
    hours = np.arange(READINGS // 10, dtype=np.int64) * 3_600_000_000 + 946_684_800_000_000
    for meter in range(10):
        yield from series_messages(f"meter-{meter}", hours, np.full(len(hours), 0.5), 10_000)


async def test_a_long_stream_keeps_server_memory_flat(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    process, port = await serve_on(database_url, tmp_path / "server.log", cleanup)
    server = psutil.Process(process.pid)
    idle = server.memory_info().rss
    peak = idle
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
            response = await stub.IngestReadings(messages())
    finally:
        sampling = False
        await asyncio.to_thread(sampler.join)
    assert response.readings_received == READINGS
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM readings") == READINGS
    finally:
        await connection.close()
    assert peak - idle < ALLOWED_GROWTH, f"RSS grew from {idle / MIB:.0f} to {peak / MIB:.0f} MiB"
    assert await stop(process) == 0
