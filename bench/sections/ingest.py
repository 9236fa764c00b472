"""Sections 1-3: ingest against raw COPY, by message form and size, and the server's memory
during one long stream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import asyncpg
from data import Dataset, copy_readings, stream
from figures import rate, verdict
from harness import ServiceProcess
from report import Results, Row

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


MIB = 1024 * 1024


async def copy_ceiling(connection: asyncpg.Connection, dataset: Dataset, tries: int = 2) -> float:
    """Best of `tries` binary COPYs of the dataset, from tuples in memory, straight into the
    service's readings table: a hypertable on TimescaleDB, a distributed table on Citus."""
    records = dataset.tuples()
    best = float("inf")
    for _ in range(tries):
        await connection.execute("TRUNCATE readings")
        best = min(best, await copy_readings(connection, records))
    await connection.execute("TRUNCATE readings")
    return best


async def ingest_section(
    results: Results, connection: asyncpg.Connection, stub: Stub, dataset: Dataset, sizes: list[int]
) -> None:
    # The raw COPY is timed again before each of the service's measurements, and its best run
    # is the ceiling: one cold run at the start alone was once slower than the service.
    raw = [await copy_ceiling(connection, dataset)]
    measured: list[tuple[str, int, float]] = []
    for form in ("columns", "rows"):
        for size in sizes:
            build = dataset.column_messages if form == "columns" else dataset.row_messages
            messages = list(build(size))
            raw.append(await copy_ceiling(connection, dataset, tries=1))
            # Best of two, like the ceiling; one run where it takes minutes (tiny messages).
            seconds = float("inf")
            for _ in range(2 if size >= 100 else 1):
                await connection.execute("TRUNCATE readings")
                seconds = min(seconds, await stream(stub, messages))
                stored = await connection.fetchval("SELECT count(*) FROM readings")
                if stored != dataset.size:
                    raise RuntimeError(f"{form}/{size}: {stored} readings stored, expected {dataset.size}")
            del messages
            measured.append((form, size, seconds))
    ceiling = min(raw)
    ceiling_rate = dataset.size / ceiling
    results.add(
        Row(
            "1 ingest ceiling",
            f"asyncpg binary COPY of {dataset.size:,} readings into readings, best of {len(raw) + 1} "
            f"(slowest {rate(dataset.size, max(raw))})",
            rate(dataset.size, ceiling),
            summary="ingest, raw COPY",
        )
    )
    best = 0.0
    for form, size, seconds in measured:
        ratio = dataset.size / seconds / ceiling_rate
        best = max(best, ratio)
        results.add(
            Row(
                "2 ingest via service",
                f"{form}, {size:,} per message",
                rate(dataset.size, seconds),
                f"{ceiling_rate:,.0f} readings/s",
                f"{ratio:.2f}",
            )
        )
    results.add(
        Row(
            "2 ingest via service",
            "best message size",
            f"{best * ceiling_rate:,.0f} readings/s",
            f"{ceiling_rate:,.0f} readings/s",
            f"{best:.2f}",
            ">= 0.90",
            verdict(best >= 0.9),
            summary="ingest via the service, best message size",
        )
    )


async def memory_section(
    results: Results, connection: asyncpg.Connection, stub: Stub, service: ServiceProcess, readings: int
) -> None:
    await connection.execute("TRUNCATE readings")
    dataset = Dataset(meters=100, hours=readings // 100)
    baseline = service.rss()
    blocked = 0.0
    with service.peak_rss() as peak:
        started = time.perf_counter()
        call = stub.IngestReadings()
        for message in dataset.column_messages(5_000):
            before = time.perf_counter()
            await call.write(message)  # returns when gRPC flow control lets the message go
            blocked += time.perf_counter() - before
        await call.done_writing()
        await call
        seconds = time.perf_counter() - started
    peak_rss = peak()
    results.add(
        Row(
            "3 memory",
            f"server peak RSS, one stream of {dataset.size:,} readings",
            f"{peak_rss / MIB:.0f} MiB (idle {baseline / MIB:.0f} MiB)",
            "",
            "",
            "< 256 MiB",
            verdict(peak_rss < 256 * MIB),
        )
    )
    results.add(
        Row(
            "3 memory",
            "client time waiting on flow control",
            f"{blocked:.1f} s of {seconds:.1f} s ({blocked / seconds:.0%}), {rate(dataset.size, seconds)}",
        )
    )
