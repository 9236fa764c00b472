"""Scale run: about 100 million readings through the service on compressed TimescaleDB, and the
same questions asked of 1 million.

    .venv/bin/python bench/scale.py --database-url postgresql://...   # a TimescaleDB server

Two fresh databases, each migrated and served by its own `timeseries-aggregation serve`: a
small one of `--small-meters` meters and a large one of `--meters` meters, every meter with
quarter-hourly readings over `--years` years (1,000 meters x 3 years = 105 million). Each is
loaded through the service (concurrent streams of a few meters each, columnar messages of
20,000 readings), then every chunk is compressed, as the compression policy would do, and the
figures are measured: load rate, bytes per reading before and after compression, and one-meter
queries through the service against the same aggregate in plain SQL. The portfolio question
(every meter's total per day of a month) is asked in plain SQL only, for now: the service
answers it once portfolio queries exist. Results go to bench/results/scale.json and
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import grpc
import numpy as np

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from data import UNIX_EPOCH
from engine import COMPRESS_EVERY_CHUNK, STORED_BYTES, detect_engine
from figures import ms, percentile, rate, verdict
from harness import ServiceProcess, bench_database, machine_description
from queries import query_latencies
from report import Results, Row, add_results_folder_argument, publish, shown_command

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client import series_messages

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

QUARTER_HOUR_MICROS = 900_000_000
FIRST_YEAR = 2023
PORTFOLIO_SQL = """
    SELECT date_trunc('day', time) AS day, sum(quantity_kwh), count(*), count(DISTINCT series_id)
    FROM readings WHERE time >= $1 AND time < $2
    GROUP BY 1 ORDER BY 1
"""
SIZE_SQL = STORED_BYTES["timescaledb-compressed"]


def series_id(meter: int) -> str:
    return f"meter-{meter:05d}"


def meter_readings(meter: int, years: int) -> tuple[np.ndarray, np.ndarray]:
    """A meter's quarter-hourly readings: a daily curve with noise, kWh to three decimals."""
    start = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
    end = datetime(FIRST_YEAR + years, 1, 1, tzinfo=UTC)
    count = int((end - start).total_seconds() // 900)
    first = (start - UNIX_EPOCH).total_seconds() * 1_000_000
    times = int(first) + np.arange(count, dtype=np.int64) * QUARTER_HOUR_MICROS
    seconds = times / 1_000_000
    generator = np.random.default_rng(meter)
    curve = 0.05 + 0.2 * (1 + np.sin(2 * np.pi * seconds / 86_400)) + 0.1 * generator.random(count)
    return times, np.round(curve, 3)


async def load(
    stub: Stub, meters: int, years: int, meters_per_stream: int, streams: int
) -> tuple[int, float]:
    """All meters through the service, `streams` streams at a time; (readings, seconds)."""
    groups = [
        range(first, min(first + meters_per_stream, meters)) for first in range(0, meters, meters_per_stream)
    ]
    pending = iter(groups)
    loaded = 0

    def messages(group: range) -> Iterator[pb.IngestReadingsRequest]:
        for meter in group:
            times, quantities = meter_readings(meter, years)
            yield from series_messages(series_id(meter), times, quantities, 20_000)

    async def sender() -> None:
        nonlocal loaded
        for group in pending:
            response = await stub.IngestReadings(messages(group), timeout=3600)
            loaded += response.readings_received
            print(f"    {loaded:,} readings stored", end="\r", flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(streams)))
    print()
    return loaded, time.perf_counter() - started


async def portfolio_latencies(connection: asyncpg.Connection, year: int, iterations: int) -> list[float]:
    """Each day's total of all meters over October of `year`, in plain SQL."""
    october = (datetime(year, 10, 1, tzinfo=UTC), datetime(year, 11, 1, tzinfo=UTC))
    latencies: list[float] = []
    for iteration in range(iterations + 1):
        started = time.perf_counter()
        days = await connection.fetch(PORTFOLIO_SQL, *october, timeout=600)
        if len(days) != 31:
            raise RuntimeError(f"the portfolio question found readings on {len(days)} days of October")
        if iteration >= 1:
            latencies.append(time.perf_counter() - started)
    return latencies


@dataclass
class Store:
    """One database of `meters` meters, loaded, compressed, and served by its own process."""

    meters: int
    connection: asyncpg.Connection
    stub: Stub

    @property
    def label(self) -> str:
        return f"{self.meters:,} meters"


@asynccontextmanager
async def loaded_store(
    server_url: str, meters: int, arguments: argparse.Namespace, results: Results
) -> AsyncIterator[Store]:
    """A fresh database of `meters` meters loaded through the service and compressed; the load
    and storage figures go to `results` on the way."""
    async with bench_database(server_url, f"{meters}_meters") as database_url:
        service = ServiceProcess(database_url)
        try:
            await service.wait_serving()
            connection = await asyncpg.connect(database_url, server_settings={"TimeZone": "UTC"})
            try:
                engine = await detect_engine(connection, compressed=True)
                if not results.notes:
                    results.notes = await machine_description(connection, engine)
                    print("\n".join(results.notes), flush=True)
                async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                    store = Store(meters, connection, pb_grpc.TimeseriesAggregationServiceStub(channel))  # type: ignore[arg-type]
                    await load_and_compress(store, arguments, results)
                    yield store
            finally:
                await connection.close()
        finally:
            service.stop()


async def load_and_compress(store: Store, arguments: argparse.Namespace, results: Results) -> None:
    readings, seconds = await load(
        store.stub, store.meters, arguments.years, arguments.meters_per_stream, arguments.streams
    )
    results.add(
        Row(
            "load",
            f"{store.label}: {readings:,} readings via the service, {arguments.streams} streams",
            f"{seconds:,.0f} s, {rate(readings, seconds)}",
        )
    )
    connection = store.connection
    await connection.execute("ANALYZE readings", timeout=3600)
    before: int = await connection.fetchval(SIZE_SQL)
    started = time.perf_counter()
    chunks = await connection.fetchval(COMPRESS_EVERY_CHUNK, timeout=7200)
    compress_seconds = time.perf_counter() - started
    await connection.execute("VACUUM ANALYZE readings", timeout=3600)
    after: int = await connection.fetchval(SIZE_SQL)
    results.add(
        Row(
            "storage",
            f"{store.label}: bytes per reading, uncompressed / compressed ({chunks} chunks)",
            f"{before / readings:.1f} / {after / readings:.1f} bytes "
            f"({before / 2**30:.2f} / {after / 2**30:.2f} GiB)",
            "",
            f"{after / before:.3f}",
        )
    )
    results.add(
        Row(
            "storage",
            f"{store.label}: compressing every chunk",
            f"{compress_seconds:,.0f} s, {rate(readings, compress_seconds)}",
        )
    )


async def query_figures(
    stores: list[Store], arguments: argparse.Namespace, results: Results
) -> list[dict[str, float]]:
    """The same questions of every store, in alternating rounds so that each store sees the
    same conditions; each store's p50s by question."""
    # The last year loaded: every question is about recent data over a long history.
    year = FIRST_YEAR + arguments.years - 1
    rounds = 4
    samples: list[dict[str, tuple[list[float], list[float]]]] = [{} for _ in stores]
    for _ in range(rounds):
        for store, figures in zip(stores, samples, strict=True):
            for granularity in ("daily", "monthly"):
                service, plain = await query_latencies(
                    store.connection,
                    store.stub,
                    granularity,
                    arguments.query_iterations // rounds,
                    series_id=series_id(store.meters // 2),
                    year=year,
                )
                previous = figures.setdefault(granularity, ([], []))
                previous[0].extend(service)
                previous[1].extend(plain)
            portfolio = await portfolio_latencies(
                store.connection, year, arguments.portfolio_iterations // rounds
            )
            figures.setdefault("portfolio", ([], []))[1].extend(portfolio)
    p50s: list[dict[str, float]] = []
    for store, figures in zip(stores, samples, strict=True):
        for granularity in ("daily", "monthly"):
            service, plain = figures[granularity]
            ratio = percentile(service, 0.5) / percentile(plain, 0.5)
            results.add(
                Row(
                    "query",
                    f"{store.label}: {granularity}, one meter's {year}, p50 / p99",
                    f"{ms(percentile(service, 0.5))} / {ms(percentile(service, 0.99))}",
                    f"{ms(percentile(plain, 0.5))} / {ms(percentile(plain, 0.99))}",
                    f"{ratio:.2f}",
                )
            )
        portfolio = figures["portfolio"][1]
        results.add(
            Row(
                "query",
                f"{store.label}: each day's total of all meters, October {year}, plain SQL: p50 / max",
                "",
                f"{ms(percentile(portfolio, 0.5))} / {ms(max(portfolio))}",
            )
        )
        p50s.append(
            {
                "daily": percentile(figures["daily"][0], 0.5),
                "monthly": percentile(figures["monthly"][0], 0.5),
                "portfolio": percentile(portfolio, 0.5),
            }
        )
    return p50s


async def run(arguments: argparse.Namespace) -> Results:
    results = Results(engine="scale")
    async with AsyncExitStack() as stores:
        small = await stores.enter_async_context(
            loaded_store(arguments.database_url, arguments.small_meters, arguments, results)
        )
        large = await stores.enter_async_context(
            loaded_store(arguments.database_url, arguments.meters, arguments, results)
        )
        small_p50s, large_p50s = await query_figures([small, large], arguments, results)
    factor = arguments.meters / arguments.small_meters
    for question in ("daily", "monthly", "portfolio"):
        growth = large_p50s[question] / small_p50s[question]
        one_meter = question != "portfolio"
        results.add(
            Row(
                "growth",
                f"{question}{'' if one_meter else ' (plain SQL)'}: p50 at {arguments.meters:,} meters "
                f"vs {arguments.small_meters:,} ({factor:.0f}x the readings)",
                f"{ms(large_p50s[question])} vs {ms(small_p50s[question])}",
                "",
                f"{growth:.2f}",
                "<= 1.50" if one_meter else "",
                verdict(growth <= 1.5) if one_meter else "",
            )
        )
    return results


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="a TimescaleDB server (community edition)")
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--small-meters", type=int, default=10)
    parser.add_argument("--years", type=int, default=3, help=f"years of readings from {FIRST_YEAR}")
    parser.add_argument("--meters-per-stream", type=int, default=10)
    parser.add_argument("--streams", type=int, default=2, help="streams at a time")
    parser.add_argument("--query-iterations", type=int, default=200)
    parser.add_argument("--portfolio-iterations", type=int, default=12)
    add_results_folder_argument(parser)
    return parser.parse_args(argv)


def main() -> None:
    argv = sys.argv[1:]
    arguments = parse_arguments(argv)
    results = asyncio.run(run(arguments))
    results.label = (
        f"Scale: {arguments.meters:,} meters of quarter-hourly readings over {arguments.years} years, "
        "compressed TimescaleDB"
    )
    results.command = shown_command(".venv/bin/python bench/scale.py", argv)
    publish(results, arguments.results_folder)


if __name__ == "__main__":
    main()
