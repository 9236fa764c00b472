"""Readings storage on TimescaleDB: bytes per reading before and after compression.

    .venv/bin/python bench/compression.py --database-url postgresql://... [--meters 100] [--days 90]
    .venv/bin/python bench/compression.py --database-url ... --chunk-intervals 7d,14d,28d

For each chunk interval, a fresh database migrated as the service does (migration 0006
enables compression) gets `--meters` meters of quarter-hourly readings over `--days` days,
values as a meter reports them (kWh, three decimals, a daily curve plus noise). The script
prints the size of readings (table, indexes, TOAST) per reading, then compresses every chunk
and prints it again, with the compressed batches' rows per meter.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta

import asyncpg

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from data import QUARTER_HOURLY_LOAD, write_readings
from engine import COMPRESS_EVERY_CHUNK
from harness import bench_database, machine_description

from timeseries_aggregation.domain.durations import format_duration, parse_duration
from timeseries_aggregation.storage.engine import detect_capabilities
from timeseries_aggregation.storage.schema import apply_migrations

# Compressed batches (a compressed chunk's rows), as TimescaleDB's catalog counted them.
_BATCHES = "SELECT sum(numrows_post_compression) FROM _timescaledb_catalog.compression_chunk_size"


async def measure(server_url: str, meters: int, days: int, chunk_interval: timedelta) -> list[str]:
    """The figures for one chunk interval, each line printed as it is measured."""
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    async with bench_database(server_url) as database_url:
        connection = await asyncpg.connect(database_url)
        try:
            await apply_migrations(connection)
            if not (await detect_capabilities(connection)).compression:
                raise SystemExit(
                    "this server cannot compress readings (TimescaleDB community edition needed)"
                )
            await connection.execute(
                "SELECT set_chunk_time_interval('readings', $1::interval)", chunk_interval
            )
            await write_readings(connection, QUARTER_HOURLY_LOAD, meters, timedelta(days=days))
            await connection.execute("VACUUM ANALYZE readings")
            readings: int = await connection.fetchval("SELECT count(*) FROM readings")
            chunks: int = await connection.fetchval("SELECT count(*) FROM show_chunks('readings')")
            before: int = await connection.fetchval("SELECT hypertable_size('readings')")
            started = time.perf_counter()
            await connection.execute(COMPRESS_EVERY_CHUNK)
            seconds = time.perf_counter() - started
            after: int = await connection.fetchval("SELECT hypertable_size('readings')")
            batches: int = await connection.fetchval(_BATCHES)
            report(
                f"{format_duration(chunk_interval)} chunks ({chunks}), {readings:,} readings: "
                f"{before / readings:.1f} bytes per reading uncompressed, {after / readings:.1f} compressed "
                f"({before / after:.1f}x smaller; {readings / batches:.0f} readings per batch; "
                f"compressing took {seconds:.1f} s)"
            )
        finally:
            await connection.close()
    return lines


async def run(arguments: argparse.Namespace) -> list[str]:
    async with bench_database(arguments.database_url) as database_url:
        connection = await asyncpg.connect(database_url)
        try:
            await apply_migrations(connection)
            lines = await machine_description(connection)
        finally:
            await connection.close()
    lines.append(f"{arguments.meters} meters, quarter-hourly readings over {arguments.days} days")
    print("\n".join(lines), flush=True)
    for interval in arguments.chunk_intervals.split(","):
        lines += await measure(
            arguments.database_url, arguments.meters, arguments.days, parse_duration(interval)
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="a TimescaleDB server (community edition)")
    parser.add_argument("--meters", type=int, default=100, help="meters reporting every 15 minutes")
    parser.add_argument("--days", type=int, default=90, help="days of readings per meter")
    parser.add_argument(
        "--chunk-intervals", default="7d", help="comma-separated chunk intervals to compare, e.g. 7d,14d,28d"
    )
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
