"""One caller's history page: which rows PostgreSQL reads to find it, and how long it takes.

    .venv/bin/python bench/history_by_caller.py [--entries 200000] [--callers 10]
    .venv/bin/python bench/history_by_caller.py --database-url postgresql://...   # e.g. TimescaleDB

The history holds `--entries` entries of `--callers` callers: all but the last take turns; the
last one's few entries (one in 10,000) are among the oldest: a key that queried a month ago. For the
first page of 100 of a busy caller and of that rare one, it prints the plan's index, the rows
the scans read (kept and thrown away), the buffers touched and the time (median of 15), with a
custom plan (what the first executions of a prepared statement get) and a generic one (what
PostgreSQL may switch to from the sixth on): for the statement the service runs
(storage/query_history.py) and for the plain one, `caller_name = $3 ORDER BY id DESC`.
It also times migration 0012's index build on that table, and gives the index's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import asyncpg

# This script's folder is on sys.path when it runs, so the benchmark's modules import by name.
from harness import bench_database, machine_description, postgres_server

from timeseries_aggregation.storage.query_history import LIST_CALLERS_HISTORY
from timeseries_aggregation.storage.schema import apply_migrations

PLAIN = LIST_CALLERS_HISTORY.replace(
    "caller_name >= $3 AND caller_name <= $3 AND id < $1", "caller_name = $3 AND id < $1"
).replace("ORDER BY caller_name DESC, id DESC", "ORDER BY id DESC")
PAGE = 100
RUNS = 15


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


async def fill(connection: asyncpg.Connection, entries: int, callers: int) -> None:
    await connection.execute(
        """
        INSERT INTO query_history (series_id, granularity, time_zone, page_size, continued_page,
                                   bucket_count, caller_name)
        SELECT 'meter-' || (n % 100), 'day_of_month', 'UTC', 1000, false, 31,
               CASE WHEN n <= $1 / 100 AND n % 100 = 0 THEN 'caller-' || ($2 - 1)
                    ELSE 'caller-' || (n % ($2 - 1)) END
        FROM generate_series(1, $1) AS n
        """,
        entries,
        callers,
        timeout=3600,
    )
    await connection.execute("ANALYZE query_history")


async def explain(
    connection: asyncpg.Connection, statement: str, caller: str, generic: bool
) -> dict[str, Any]:
    await connection.execute(f"PREPARE page (bigint, integer, text) AS {statement}")
    plan_cache_mode = "force_generic_plan" if generic else "force_custom_plan"
    await connection.execute(f"SET plan_cache_mode = {plan_cache_mode}")
    arguments = f"{2**63 - 1}, {PAGE + 1}, '{caller}'"
    query = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE page ({arguments})"
    times = []
    plan: dict[str, Any] = {}
    for _ in range(RUNS):
        text = await connection.fetchval(query)
        plan = json.loads(text)[0]
        times.append(plan["Execution Time"])
    await connection.execute("RESET plan_cache_mode")
    await connection.execute("DEALLOCATE page")
    nodes = list(plan_nodes(plan["Plan"]))
    scans = [node for node in nodes if "Scan" in node["Node Type"]]
    return {
        "index": ", ".join(sorted({node.get("Index Name", node["Node Type"]) for node in scans})),
        "rows read": int(sum(node["Actual Rows"] + node.get("Rows Removed by Filter", 0) for node in scans)),
        "buffers": plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"],
        "ms": statistics.median(times),
    }


async def run(database_url: str | None, entries: int, callers: int) -> None:
    with postgres_server(database_url) as server_url:
        async with bench_database(server_url, "history_by_caller") as url:
            connection = await asyncpg.connect(url)
            try:
                # Migrated first: on Citus the description counts the shards of readings.
                await apply_migrations(connection)
                print("\n".join(await machine_description(connection)))
                await connection.execute("DROP INDEX query_history_by_caller")
                await fill(connection, entries, callers)
                await connection.execute(
                    "DELETE FROM schema_migrations WHERE version = '0012_query_history_by_caller'"
                )
                started = time.perf_counter()
                await apply_migrations(connection)
                built = time.perf_counter() - started
                index_bytes = await connection.fetchval("SELECT pg_relation_size('query_history_by_caller')")
                print(
                    f"- {entries:,} entries of {callers} callers; 0012 built the index in {built:.2f} s, "
                    f"{index_bytes / entries:.0f} bytes an entry"
                )
                print("\n| statement | plan | caller | index | rows read | buffers | ms (median) |")
                print("| --- | --- | --- | --- | --- | --- | --- |")
                for name, statement in (("service's", LIST_CALLERS_HISTORY), ("plain =", PLAIN)):
                    for generic in (False, True):
                        for caller in ("caller-0", f"caller-{callers - 1}"):
                            figures = await explain(connection, statement, caller, generic)
                            print(
                                f"| {name} | {'generic' if generic else 'custom'} | "
                                f"{'busy' if caller == 'caller-0' else 'rare'} | {figures['index']} | "
                                f"{figures['rows read']:,} | {figures['buffers']:,} | {figures['ms']:.3f} |"
                            )
            finally:
                await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a server to use instead of a new embedded one")
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--callers", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.database_url, arguments.entries, arguments.callers))


if __name__ == "__main__":
    main()
