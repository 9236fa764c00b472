"""History retention: what it costs to upgrade, to delete a backlog, and the queries meanwhile.

    .venv/bin/python bench/history_retention.py [--expired 1000000] [--clients 8] [--seconds 15]
    .venv/bin/python bench/history_retention.py --database-url postgresql://...   # e.g. TimescaleDB

A database of the previous release holds `--expired` history entries older than the 30-day
retention. The script times migration 0004 on it, then runs the service as its own process
twice while query clients call it: first with HISTORY_RETENTION=0 (nothing deleted, the
baseline), then with 30d, until the backlog is gone. On plain PostgreSQL the service's task
deletes it in batches; on TimescaleDB the retention policy drops its chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from data import Dataset, load_query_dataset
from figures import percentile
from harness import ServiceProcess, bench_database, machine_description, postgres_server
from queries import query_clients

from timeseries_aggregation.storage.engine import detect_capabilities
from timeseries_aggregation.storage.schema import apply_migrations, migration_scripts

RETENTION_VARIABLE = "TIMESERIES_AGGREGATION_HISTORY_RETENTION"
METERS = 100


async def previous_release_with_history(connection: asyncpg.Connection, expired: int) -> None:
    """The schema before migration 0004, holding `expired` entries from 40 to 50 days ago."""
    await connection.execute(
        "CREATE TABLE schema_migrations "
        "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for version, script in migration_scripts():
        if version < "0004":
            await connection.execute(script)
            await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    await connection.execute(
        """
        INSERT INTO query_history (
            query_time, series_id, granularity, start_time, end_time, time_zone,
            page_size, continued_page, bucket_count, caller_name
        )
        SELECT now() - INTERVAL '50 days' + n * (INTERVAL '10 days' / $1),
               format('meter-%s', lpad((n % 100)::text, 3, '0')), 'day_of_month',
               '2025-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'UTC', 1000, false, 365, 'loader'
        FROM generate_series(1, $1) AS n
        """,
        expired,
        timeout=3600,
    )
    await connection.execute("VACUUM ANALYZE query_history", timeout=3600)


async def history_bytes(connection: asyncpg.Connection, hypertable: bool) -> int:
    """Table and index bytes of query_history (all chunks on TimescaleDB)."""
    size_function = "hypertable_size" if hypertable else "pg_total_relation_size"
    size: int = await connection.fetchval(f"SELECT {size_function}('query_history')")
    return size


async def expired_left(connection: asyncpg.Connection) -> bool:
    left: bool = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM query_history WHERE query_time < now() - INTERVAL '30 days')"
    )
    return left


@dataclass(frozen=True)
class Phase:
    """What the query clients saw while one service process ran."""

    ok: int
    errors: int
    latencies: list[float]
    # From SERVING until the clients stopped; from the process's start until the backlog was
    # gone (the task starts deleting before the server reports SERVING).
    query_seconds: float
    total_seconds: float

    def line(self, label: str) -> str:
        if not self.latencies:
            return f"{label}: no query clients"
        p50, p99 = (percentile(self.latencies, fraction) * 1000 for fraction in (0.5, 0.99))
        return (
            f"{label}: {self.ok:,} queries ({self.ok / self.query_seconds:,.0f}/s), "
            f"p50 / p99 {p50:.1f} / {p99:.1f} ms, {self.errors} errors"
        )


async def service_phase(
    database_url: str, retention: str, clients: int, seconds: float, connection: asyncpg.Connection
) -> Phase:
    """Query clients against a service started with this retention, for `seconds` or, with a
    retention, until no expired entry is left."""
    # The service process inherits this environment.
    os.environ[RETENTION_VARIABLE] = retention
    started = time.perf_counter()
    service = ServiceProcess(database_url)
    try:
        await service.wait_serving()
        serving = time.perf_counter()
        stop = asyncio.Event()

        async def backlog_gone() -> None:
            while True:
                if not await expired_left(connection):
                    stop.set()
                    return
                await asyncio.sleep(0.2)

        target = f"127.0.0.1:{service.port}"
        if retention == "0":
            ok, errors, latencies = await query_clients(target, clients, seconds, METERS)
        else:
            (ok, errors, latencies), _ = await asyncio.gather(
                query_clients(target, clients, 3600, METERS, stop), backlog_gone()
            )
        ended = time.perf_counter()
        return Phase(ok, errors, latencies, ended - serving, ended - started)
    finally:
        service.stop()


async def run(arguments: argparse.Namespace) -> list[str]:
    """Print each figure as it is measured; return them all."""
    lines: list[str] = []

    def report(*new_lines: str) -> None:
        lines.extend(new_lines)
        print("\n".join(new_lines), flush=True)

    with postgres_server(arguments.database_url) as server_url:
        async with bench_database(server_url) as database_url:
            connection = await asyncpg.connect(database_url)
            try:
                report(*await machine_description(connection))
                await previous_release_with_history(connection, arguments.expired)
                started = time.perf_counter()
                await apply_migrations(connection)
                migration_seconds = time.perf_counter() - started
                chunked = (await detect_capabilities(connection)).history_hypertable
                report(
                    f"migration 0004 on {arguments.expired:,} history entries: {migration_seconds:.1f} s "
                    f"({'hypertable, rows moved into chunks' if chunked else 'index on query_time'})"
                )
                await connection.execute("ANALYZE query_history")
                size = await history_bytes(connection, chunked)
                report(f"history size: {size / arguments.expired:,.0f} bytes per entry (table and indexes)")
                await load_query_dataset(connection, Dataset(meters=METERS, hours=8_760))
                clients = arguments.clients
                baseline = await service_phase(database_url, "0", clients, arguments.seconds, connection)
                report(baseline.line(f"{clients} query clients, retention off"))
                deleting = await service_phase(database_url, "30d", clients, 0, connection)
                elapsed = deleting.total_seconds
                report(
                    f"backlog of {arguments.expired:,} expired entries gone {elapsed:.1f} s after the "
                    f"service started ({arguments.expired / elapsed:,.0f} entries/s, "
                    f"{'retention policy' if chunked else 'batched deletes'})",
                    deleting.line(f"{clients} query clients meanwhile"),
                )
            finally:
                await connection.close()
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="run on this server (default: embedded PostgreSQL)")
    parser.add_argument("--expired", type=int, default=1_000_000, help="expired history entries to delete")
    parser.add_argument("--clients", type=int, default=8, help="concurrent query clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the baseline")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
