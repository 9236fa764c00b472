"""Where a query's time goes: the bench's daily query, layer by layer, in one run.

    .venv/bin/python bench/call_path.py [--database-url URL] [--iterations 300]

One meter's year of hourly readings (among 100 meters), daily buckets in UTC, answered by:

1. plain SQL, what someone would write by hand (the bench's ceiling);
2. the service's statement, without its history record;
3. the service's statement as the service sends it (with the history record: one statement,
   or on Citus a transaction of the read and the insert);
4. the service's storage call on its own pool, in this process (connection hand-out, row
   decoding, buckets built);
5. QueryAggregates over gRPC to a server in this process (validation, interceptors, encoding,
   HTTP/2 on loopback);
6. QueryAggregates over gRPC to the server as its own process, as in production, with that
   process's CPU time per query.

Beside the stages it times the building of the response message from the page's buckets, the
part of the server's CPU that grows with the page.

The stages run call after call in turn, so all see the same conditions; each row gives the
p50 and p99 and what the stage adds to the one before. Nothing is kept: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime

import asyncpg
import grpc
import psutil

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from data import YEAR_2025, YEAR_2026, Dataset, load_query_dataset
from engine import detect_engine, settle
from figures import percentile
from harness import ServiceProcess, bench_database, machine_description, postgres_server
from queries import PLAIN_SQL, QUERY_METER, year_request

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.config import AUTH_NONE, Config
from timeseries_aggregation.domain.aggregation import make_aggregate_query
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.domain.query_plan import PagePlan, plan_series_page
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.query_pages import query_series_page
from timeseries_aggregation.storage.aggregate_sql import series_page_sql
from timeseries_aggregation.storage.database import PoolSettings, open_database
from timeseries_aggregation.transport.convert import buckets_response

Call = Callable[[], Awaitable[object]]


async def measure(stages: dict[str, Call], iterations: int, warm_up: int = 20) -> dict[str, list[float]]:
    """Each stage once per round, `iterations` rounds after `warm_up`; latencies in seconds."""
    latencies: dict[str, list[float]] = {name: [] for name in stages}
    for round_number in range(warm_up + iterations):
        for name, call in stages.items():
            started = time.perf_counter()
            await call()
            if round_number >= warm_up:
                latencies[name].append(time.perf_counter() - started)
    return latencies


async def run(arguments: argparse.Namespace) -> None:
    query = make_aggregate_query(QUERY_METER, Granularity.DAY_OF_MONTH, YEAR_2025, YEAR_2026, "UTC")
    page: PageRequest[datetime] = PageRequest(page_size=1000, after=None)
    with postgres_server(arguments.database_url) as server_url:
        async with AsyncExitStack() as stack:
            database_url = await stack.enter_async_context(bench_database(server_url))
            service = ServiceProcess(database_url)
            stack.callback(service.stop)
            await service.wait_serving()
            connection = await asyncpg.connect(database_url, server_settings={"TimeZone": "UTC"})
            stack.push_async_callback(connection.close)
            engine = await detect_engine(connection, compressed=False)
            print("\n".join(await machine_description(connection, engine)), flush=True)
            await load_query_dataset(connection, Dataset(meters=100, hours=8_760))
            await settle(connection, engine)

            database = await stack.enter_async_context(open_database(database_url, PoolSettings()))
            config = Config(listen_address="127.0.0.1:0", auth_mode=AUTH_NONE)
            in_process = await stack.enter_async_context(grpc_server(database, config))
            channels = [
                await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
                for port in (in_process.port, service.port)
            ]
            in_process_stub, process_stub = (pb_grpc.TimeseriesAggregationServiceStub(c) for c in channels)

            plain = PLAIN_SQL.format(unit="day")
            # A year of days is one page: planned without a probe.
            plan = plan_series_page(query, page)
            assert isinstance(plan, PagePlan)
            bare, bare_arguments = series_page_sql(plan, None, rollups=True, guarded=False)
            recorded, recorded_arguments = series_page_sql(plan, "bench", rollups=True, guarded=False)
            request = year_request(QUERY_METER, pb.GRANULARITY_DAY_OF_MONTH)

            async def service_statement() -> object:
                # As query_aggregates does where one statement cannot read and record: the read,
                # then the insert, in one transaction.
                if not database.capabilities.reads_and_writes_in_one_statement:
                    async with connection.transaction():
                        rows = await connection.fetch(bare, *bare_arguments)
                        await connection.execute("SELECT 1")  # the insert's round trip
                        return rows
                return await connection.fetch(recorded, *recorded_arguments)

            stages: dict[str, Call] = {
                "1 plain SQL": lambda: connection.fetch(plain, QUERY_METER, YEAR_2025, YEAR_2026),
                "2 service statement, no history": lambda: connection.fetch(bare, *bare_arguments),
                "3 service statement with history": service_statement,
                "4 storage call on the service's pool": lambda: query_series_page(
                    database, query, page, "bench"
                ),
                "5 gRPC, server in this process": lambda: in_process_stub.QueryAggregates(
                    request, timeout=30
                ),
            }
            latencies = await measure(stages, arguments.iterations)
            buckets = (await query_series_page(database, query, page, "bench")).items
            building = []
            for _ in range(arguments.iterations):
                began = time.perf_counter()
                buckets_response(buckets, "")
                building.append(time.perf_counter() - began)

            server = psutil.Process(service.process.pid)
            before = server.cpu_times()
            started = time.perf_counter()
            process_latencies = []
            for _ in range(arguments.iterations):
                began = time.perf_counter()
                await process_stub.QueryAggregates(request, timeout=30)
                process_latencies.append(time.perf_counter() - began)
            wall = time.perf_counter() - started
            after = server.cpu_times()
            latencies["6 gRPC, server as its own process"] = process_latencies

    print(f"\n{arguments.iterations} calls per stage, one meter's year in daily buckets:\n")
    print(f"{'stage':<42} {'p50':>9} {'p99':>9} {'adds (p50)':>11} {'vs plain SQL':>13}")
    previous = None
    plain_p50 = percentile(latencies["1 plain SQL"], 0.5)
    for name, samples in latencies.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        adds = "" if previous is None else f"{(p50 - previous) * 1000:+.2f} ms"
        print(f"{name:<42} {p50 * 1000:>6.2f} ms {p99 * 1000:>6.2f} ms {adds:>11} {p50 / plain_p50:>12.2f}x")
        previous = p50
    print(
        f"\nbuilding the response of {len(buckets)} buckets: p50 {percentile(building, 0.5) * 1000:.2f} ms"
        f" (part of stages 5 and 6)"
    )
    cpu = (after.user + after.system) - (before.user + before.system)
    print(
        f"\nserver process: {cpu / arguments.iterations * 1000:.2f} ms of CPU per query "
        f"({cpu / wall:.0%} of a core while answering one caller at a time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="measure on this server (default: embedded PostgreSQL)")
    parser.add_argument("--iterations", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
