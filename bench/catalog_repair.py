"""Catalog repair: how long `catalog check` and `catalog rebuild` take on a database whose
readings an old server wrote behind the catalog and the rollups.

    .venv/bin/python bench/catalog_repair.py [--readings 1000000] [--meters 1000]
    .venv/bin/python bench/catalog_repair.py --database-url postgresql://...   # e.g. TimescaleDB
    .venv/bin/python bench/catalog_repair.py --database-url postgresql://... --compress

`--meters` quarter-hourly meters share `--readings` readings, written straight into `readings`
(none of them in the catalog, none rolled up: the worst case, every series to add and roll up).
The script times a check that finds it all, the rebuild, and a check of the repaired database
(what a check costs when nothing is wrong). With `--compress` on TimescaleDB, every chunk of
readings is compressed first, as the compression policy leaves old ones.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import Sequence

import asyncpg

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from harness import bench_database, machine_description, postgres_server

from timeseries_aggregation.catalog_maintenance import check_catalog_command, rebuild_catalog_command
from timeseries_aggregation.rollup_maintenance import SETTINGS
from timeseries_aggregation.storage.database import open_database
from timeseries_aggregation.storage.writer_contract import DECLARE_ON_SHARDS, SESSION_SETTINGS

_OLD_SERVER_WRITES = """
    INSERT INTO readings
    SELECT format('meter-%s', lpad(meter::text, 6, '0')),
           TIMESTAMPTZ '2025-01-01Z' + n * INTERVAL '15 minutes',
           (meter % 7) + (n % 96) / 96.0
    FROM generate_series(1, $1::integer) AS meter, generate_series(0, $2::integer - 1) AS n
"""


async def run(database_url: str | None, readings: int, meters: int, batch_size: int, compress: bool) -> None:
    with postgres_server(database_url) as server_url:
        async with bench_database(server_url, "catalog_repair") as url:
            async with open_database(url, SETTINGS):
                pass  # migrated
            # Writes readings by hand, so it declares the schema contract (writer_contract.py).
            connection = await asyncpg.connect(url, server_settings=SESSION_SETTINGS)
            try:
                for line in await machine_description(connection):
                    print(line)
                began = time.perf_counter()
                async with connection.transaction():
                    await connection.execute(DECLARE_ON_SHARDS)
                    await connection.execute(_OLD_SERVER_WRITES, meters, readings // meters, timeout=7200)
                if compress:
                    await connection.execute(
                        "SELECT compress_chunk(chunk, if_not_compressed => true)"
                        " FROM show_chunks('readings') AS chunk",
                        timeout=7200,
                    )
                    compressed = await connection.fetchval(
                        "SELECT count(*) FROM timescaledb_information.chunks"
                        " WHERE hypertable_name = 'readings' AND is_compressed"
                    )
                    print(f"compressed {compressed} chunks of readings")
                await connection.execute("ANALYZE readings", timeout=3600)
                seconds = time.perf_counter() - began
                print(f"loaded {readings:,} readings of {meters:,} meters in {seconds:.1f} s")
            finally:
                await connection.close()
            for label, step in (
                ("check (everything to repair)", check_catalog_command),
                ("rebuild", rebuild_catalog_command),
                ("check (nothing to repair)", check_catalog_command),
            ):
                out = io.StringIO()
                began = time.perf_counter()
                await step(url, None, out, 1, batch_size)
                seconds = time.perf_counter() - began
                print(
                    f"{label}: {seconds:.1f} s, {readings / seconds:,.0f} readings/s; "
                    f"{out.getvalue().splitlines()[-1]}"
                )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--database-url", help="an existing server (default: a new embedded PostgreSQL)")
    parser.add_argument("--compress", action="store_true", help="compress every chunk first (TimescaleDB)")
    arguments = parser.parse_args(argv)
    asyncio.run(
        run(
            arguments.database_url,
            arguments.readings,
            arguments.meters,
            arguments.batch_size,
            arguments.compress,
        )
    )


if __name__ == "__main__":
    main()
