"""How long an upgrade's migrations take on a large database, per migration and per 100 million
readings.

    .venv/bin/python bench/migration_scale.py [--readings 10000000] [--meters 1000] [--before 0007]
    .venv/bin/python bench/migration_scale.py --database-url postgresql://...   # e.g. TimescaleDB

A fresh database gets the schema as it was before migration `--before` (the migrations before
it, applied by the service's runner), then `--readings` readings of `--meters` meters,
quarter-hourly, written in SQL (generate_series) and vacuumed, as a database in service would
be. The runner then applies the remaining migrations one by one, on a connection set up as the
service's pool sets up its own (a 30 s statement timeout, on the server and in the client), and
the script prints each one's time and that time per 100 million readings. Migration 0007 is the
heavy one: it fills the series catalog from one pass over every reading.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from engine import STORED_BYTES, detect_engine
from harness import bench_database, machine_description, postgres_server

from timeseries_aggregation.storage.database import PoolSettings
from timeseries_aggregation.storage.schema import apply_migrations, migration_scripts

# One statement writes this many readings: each commits on its own, as loading in batches would.
FILL_BATCH = 5_000_000
HUNDRED_MILLION = 100_000_000
FILL = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT format('meter-%s', lpad(meter::text, 6, '0')),
           TIMESTAMPTZ '2023-01-01' + step * INTERVAL '15 minutes',
           (meter % 7) * 0.25 + (step % 96) * 0.01
    FROM generate_series($1::bigint, $2::bigint) AS meter, generate_series(0, $3::bigint - 1) AS step
"""


async def fill(connection: asyncpg.Connection, readings: int, meters: int) -> None:
    """`readings` readings, `meters` meters of readings // meters quarter-hours each."""
    per_meter = readings // meters
    meters_per_batch = max(1, FILL_BATCH // per_meter)
    for first in range(0, meters, meters_per_batch):
        last = min(first + meters_per_batch, meters) - 1
        await connection.execute(FILL, first, last, per_meter, timeout=None)
    await connection.execute("VACUUM (ANALYZE) readings", timeout=None)


async def run(database_url: str | None, readings: int, meters: int, before: str) -> None:
    scripts = migration_scripts()
    earlier = [script for script in scripts if script[0] < before]
    # What the service's pool sets up (storage/database.py): the limits a migration must outlast.
    limit = PoolSettings().statement_timeout_seconds
    with postgres_server(database_url) as server_url:
        async with bench_database(server_url, "migration_scale") as url:
            loader = await asyncpg.connect(url)
            migrator = await asyncpg.connect(
                url, command_timeout=limit, server_settings={"statement_timeout": str(int(limit * 1000))}
            )
            try:
                await apply_migrations(migrator, earlier)
                # After the migrations that create the extensions the engine is told by.
                engine = await detect_engine(loader, compressed=False)
                print("\n".join(await machine_description(loader, engine)))
                started = time.perf_counter()
                await fill(loader, readings, meters)
                filled = time.perf_counter() - started
                stored = readings // meters * meters
                size = await loader.fetchval(STORED_BYTES[engine.key])
                print(
                    f"- {stored:,} readings of {meters:,} meters, written and vacuumed in {filled:.0f} s; "
                    f"readings and their key {size / 2**30:.1f} GiB; the migrations before {before} "
                    "applied first"
                )
                print(f"- the migrating connection has the service's {limit:g} s statement timeout\n")
                print("| migration | seconds | seconds per 100 million readings |")
                print("| --- | ---: | ---: |")
                total = 0.0
                for count in range(len(earlier) + 1, len(scripts) + 1):
                    version = scripts[count - 1][0]
                    started = time.perf_counter()
                    await apply_migrations(migrator, scripts[:count])
                    took = time.perf_counter() - started
                    total += took
                    print(f"| {version} | {took:.2f} | {took * HUNDRED_MILLION / stored:.0f} |")
                print(f"| all of them | {total:.2f} | {total * HUNDRED_MILLION / stored:.0f} |")
                applied = await loader.fetchval("SELECT count(*) FROM schema_migrations")
                assert applied == len(scripts), f"{applied} of {len(scripts)} migrations recorded"
            finally:
                await migrator.close()
                await loader.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a server to use instead of a new embedded one")
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument(
        "--before", default="0007", help="the first migration measured (the ones before it come first)"
    )
    arguments = parser.parse_args()
    asyncio.run(run(arguments.database_url, arguments.readings, arguments.meters, arguments.before))


if __name__ == "__main__":
    main()
