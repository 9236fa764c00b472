"""Section 5: concurrent clients, one server process against two workers, and queries during
a bulk ingest."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import psutil
from data import Dataset, stream
from figures import ms, percentile, rate, verdict
from harness import CpuSeconds, ServiceProcess, cpu_seconds
from queries import query_clients
from report import Results, Row

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


async def measured_clients(
    service: ServiceProcess, clients: int, seconds: float, meters: int
) -> tuple[int, int, list[float], CpuSeconds]:
    """query_clients against the service, with the CPU time each party spent meanwhile."""
    before = cpu_seconds(service.process.pid)
    ok, errors, latencies = await query_clients(f"127.0.0.1:{service.port}", clients, seconds, meters)
    return ok, errors, latencies, cpu_seconds(service.process.pid) - before


def cpu_per_query(used: CpuSeconds, queries: int) -> str:
    cores = psutil.cpu_count() or 1
    per_query = [1000 * part / max(queries, 1) for part in (used.server, used.database, used.client)]
    return (
        "CPU per query: server {:.2f} ms, database {:.2f} ms, client {:.2f} ms; ".format(*per_query)
        + f"machine busy {used.machine / (used.wall * cores):.0%} of {cores} cores"
    )


async def concurrency_section(
    results: Results,
    database_url: str,
    service: ServiceProcess,
    stub: Stub,
    seconds: float,
    meters: int,
    bulk_readings: int,
) -> None:
    for clients in (1, 8, 32):
        ok, errors, latencies, used = await measured_clients(service, clients, seconds, meters)
        results.add(
            Row(
                "5 concurrency",
                f"{clients} concurrent clients: queries/s, p99, errors; where the CPU went",
                f"{ok / used.wall:,.0f} q/s, {ms(percentile(latencies, 0.99))}, {errors} errors; "
                + cpu_per_query(used, ok),
                "",
                "",
                "no errors at 32" if clients == 32 else "",
                verdict(errors == 0) if clients == 32 else "",
            )
        )
    await workers_comparison(results, database_url, service, seconds, meters)
    # Query latency while one bulk stream runs: a fresh series set.
    bulk = Dataset(meters=10, hours=bulk_readings // 10, prefix="bulk")
    messages = list(bulk.column_messages(5_000))
    stop = asyncio.Event()

    async def ingest() -> float:
        try:
            return await stream(stub, messages)
        finally:
            stop.set()

    ingest_seconds, (ok, errors, latencies) = await asyncio.gather(
        ingest(), query_clients(f"127.0.0.1:{service.port}", 1, 3600, meters, stop)
    )
    results.add(
        Row(
            "5 concurrency",
            f"1 client querying during a {bulk.size:,}-reading ingest: p50 / p99 / max, errors",
            f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))} / "
            f"{ms(max(latencies))}, {errors} errors ({ok} queries; ingest {rate(bulk.size, ingest_seconds)})",
            "",
            "",
            "no failures or stalls (max < 1 s)",
            verdict(errors == 0 and max(latencies) < 1.0),
        )
    )


async def workers_comparison(
    results: Results, database_url: str, single: ServiceProcess, seconds: float, meters: int
) -> None:
    """32 clients against one server process, then against `serve --workers 2` on the same data."""
    clients = 32
    measured: dict[int, tuple[float, float]] = {}
    for workers in (1, 2):
        service = single if workers == 1 else ServiceProcess(database_url, workers=workers)
        try:
            await service.wait_serving()
            await query_clients(f"127.0.0.1:{service.port}", clients, 1.0, meters)  # warm every pool
            ok, errors, latencies, used = await measured_clients(service, clients, seconds, meters)
        finally:
            if service is not single:
                service.stop()
        measured[workers] = (ok / used.wall, percentile(latencies, 0.99))
        results.add(
            Row(
                "5 concurrency",
                f"{clients} clients, serve --workers {workers}: queries/s, p50 / p99, errors; "
                "where the CPU went",
                f"{ok / used.wall:,.0f} q/s, {ms(percentile(latencies, 0.5))} / "
                f"{ms(percentile(latencies, 0.99))}, {errors} errors; " + cpu_per_query(used, ok),
                "",
                "",
                "",
                "",
            )
        )
    (one_rate, one_p99), (two_rate, two_p99) = measured[1], measured[2]
    results.add(
        Row(
            "5 concurrency",
            f"{clients} clients, 2 workers vs 1: queries/s ratio; p99",
            f"{two_rate / one_rate:.2f}x; {ms(two_p99)} vs {ms(one_p99)}",
            "",
            f"{two_rate / one_rate:.2f}",
            "q/s >= 1.00x and a lower p99",
            verdict(two_rate >= one_rate and two_p99 < one_p99),
        )
    )
