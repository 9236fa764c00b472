"""Benchmark: the service against the raw database doing the same work, in one run.

    make bench                                                # embedded PostgreSQL
    make bench BENCH_ARGS="--database-url URL"                # any server: PostgreSQL,
                                                              # TimescaleDB, a Citus coordinator
    make bench BENCH_ARGS="--database-url URL --compressed"   # TimescaleDB, chunks compressed

Every figure is printed next to the ceiling it is held against (asyncpg on the same
database, same engine, same data, same run) and the ratio. The service runs as its own
process, as in production, so its RSS can be read and it does not share the client's
interpreter. Each engine's figures are kept in bench/results/ENGINE.json, and
bench/RESULTS.md shows every engine measured so far side by side (bench/report.py). A change is
measured before and after by two runs with the same --sections, kept with --results-folder
bench/results/comparisons/NAME/before and .../after; RESULTS.md then shows them row by row.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
import grpc
from data import Dataset, empty_tables, load_query_dataset
from engine import detect_engine, settle
from harness import ServiceProcess, bench_database, machine_description, postgres_server
from report import Results, add_results_folder_argument, publish, shown_command
from sections.concurrency import concurrency_section
from sections.ingest import ingest_section, memory_section
from sections.pages import pages_section
from sections.portfolio import portfolio_section
from sections.query import query_sections
from sections.rollups import rollups_section
from sections.storage import storage_section
from sections.tracing import tracing_section

from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
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
