"""Load: concurrent ingest streams and query clients against one server for a bounded time,
then proof that the database holds exactly the readings that were acknowledged.

    .venv/bin/python bench/load.py [--seconds 30] [--streams 16] [--queriers 32]

Every ingest stream writes its own series, so after the run each series must hold all of its
stream's readings (the stream returned OK) or none (it failed: a tenth of the streams cancel
themselves half way on purpose, and any other error counts the same way).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import grpc
import numpy as np

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from data import Dataset, load_query_dataset
from figures import percentile
from harness import ServiceProcess, bench_database, postgres_server

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client import series_messages

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

HOUR_MICROS = 3_600_000_000
START_2025_MICROS = 1_735_689_600_000_000


@dataclass
class Tally:
    """What the clients saw: per ingest stream its series and size, and whether it was acknowledged."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    ingest_errors: dict[str, int] = field(default_factory=dict)
    query_latencies: list[float] = field(default_factory=list)
    query_errors: dict[str, int] = field(default_factory=dict)
    stream_seconds: list[float] = field(default_factory=list)

    def error(self, table: dict[str, int], code: grpc.StatusCode) -> None:
        table[code.name] = table.get(code.name, 0) + 1


async def ingest_worker(stub: Stub, worker: int, deadline: float, tally: Tally) -> None:
    stream_number = 0
    while time.monotonic() < deadline:
        series_id = f"load-{worker:02d}-{stream_number:05d}"
        stream_number += 1
        readings = random.randint(1_000, 50_000)
        cancel_half_way = random.random() < 0.1
        times = START_2025_MICROS + np.arange(readings, dtype=np.int64) * HOUR_MICROS
        messages = list(series_messages(series_id, times, np.full(readings, 1.5), 2_000))
        sent_half = asyncio.Event()

        async def requests(
            messages: list[pb.IngestReadingsRequest] = messages, sent_half: asyncio.Event = sent_half
        ) -> AsyncIterator[pb.IngestReadingsRequest]:
            for number, message in enumerate(messages):
                if number == len(messages) // 2:
                    sent_half.set()
                yield message
            sent_half.set()

        started = time.monotonic()
        call = stub.IngestReadings(requests(), timeout=60)
        if cancel_half_way:
            await sent_half.wait()
            call.cancel()
        try:
            await call
            tally.acknowledged[series_id] = readings
            tally.stream_seconds.append(time.monotonic() - started)
        except asyncio.CancelledError:
            tally.failed[series_id] = readings
            tally.error(tally.ingest_errors, grpc.StatusCode.CANCELLED)
        except grpc.aio.AioRpcError as error:
            tally.failed[series_id] = readings
            tally.error(tally.ingest_errors, error.code())


async def query_worker(stub: Stub, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        request = pb.QueryAggregatesRequest(
            series_id=f"meter-{random.randrange(100):03d}",
            granularity=random.choice([pb.GRANULARITY_DAY_OF_MONTH, pb.GRANULARITY_MONTHLY]),
        )
        started = time.monotonic()
        try:
            await stub.QueryAggregates(request, timeout=30)
            tally.query_latencies.append(time.monotonic() - started)
        except grpc.aio.AioRpcError as error:
            tally.error(tally.query_errors, error.code())


async def verify(connection: asyncpg.Connection, tally: Tally) -> tuple[int, int, int]:
    """(series as acknowledged, series with missing or extra readings, failed streams that left rows)."""
    rows = await connection.fetch(
        "SELECT series_id, count(*) AS readings FROM readings WHERE series_id LIKE 'load-%' GROUP BY 1"
    )
    stored = {row["series_id"]: row["readings"] for row in rows}
    exact = sum(1 for series, count in tally.acknowledged.items() if stored.get(series) == count)
    wrong = len(tally.acknowledged) - exact
    leftovers = sum(1 for series in tally.failed if series in stored)
    unexpected = set(stored) - set(tally.acknowledged) - set(tally.failed)
    return exact, wrong + len(unexpected), leftovers


async def run(arguments: argparse.Namespace) -> list[str]:
    with postgres_server(arguments.database_url) as server_url:
        async with bench_database(server_url) as database_url:
            service = ServiceProcess(database_url)
            try:
                await service.wait_serving()
                connection = await asyncpg.connect(database_url)
                # Something to query: 100 meters, a year of hourly readings.
                await load_query_dataset(connection, Dataset(meters=100, hours=8_760))
                tally = Tally()
                target = f"127.0.0.1:{service.port}"
                deadline = time.monotonic() + arguments.seconds
                async with (
                    grpc.aio.insecure_channel(target) as ingest_channel,
                    grpc.aio.insecure_channel(target) as query_channel,
                ):
                    ingest_stub: Stub = pb_grpc.TimeseriesAggregationServiceStub(ingest_channel)  # type: ignore[assignment]
                    query_stub: Stub = pb_grpc.TimeseriesAggregationServiceStub(query_channel)  # type: ignore[assignment]
                    started = time.monotonic()
                    await asyncio.gather(
                        *(ingest_worker(ingest_stub, n, deadline, tally) for n in range(arguments.streams)),
                        *(query_worker(query_stub, deadline, tally) for _ in range(arguments.queriers)),
                    )
                    elapsed = time.monotonic() - started
                exact, wrong, leftovers = await verify(connection, tally)
                await connection.close()
            finally:
                service.stop()
    acknowledged_readings = sum(tally.acknowledged.values())
    latencies = tally.query_latencies
    return [
        f"load: {arguments.streams} ingest streams at a time and {arguments.queriers} query clients "
        f"for {elapsed:.0f} s against one server",
        f"ingest: {len(tally.acknowledged)} streams acknowledged ({acknowledged_readings:,} readings, "
        f"{acknowledged_readings / elapsed:,.0f} readings/s), {len(tally.failed)} failed "
        f"{dict(sorted(tally.ingest_errors.items()))}; stream p50 / p99 "
        f"{percentile(tally.stream_seconds, 0.5):.2f} / {percentile(tally.stream_seconds, 0.99):.2f} s",
        f"queries: {len(latencies):,} ok ({len(latencies) / elapsed:,.0f}/s), p50 / p99 "
        f"{percentile(latencies, 0.5) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"errors {dict(sorted(tally.query_errors.items()))}",
        f"verification: {exact} of {len(tally.acknowledged)} acknowledged series hold exactly their "
        f"readings; {wrong} with missing or extra readings; {leftovers} failed streams left rows "
        f"-> {'PASS' if wrong == 0 and leftovers == 0 else 'FAIL'}",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="load this server (default: embedded PostgreSQL)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--queriers", type=int, default=32)
    lines = asyncio.run(run(parser.parse_args(argv)))
    print("\n".join(lines))
    if not lines[-1].endswith("PASS"):
        sys.exit(1)


if __name__ == "__main__":
    main()
