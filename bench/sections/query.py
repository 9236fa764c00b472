"""Section 4: one meter's year, daily and monthly, against plain SQL, and again with more rows."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import asyncpg
from data import FIGURES_FROM_READINGS, Dataset, load_query_dataset, write_readings
from engine import Engine, settle
from figures import ms, percentile, verdict
from queries import query_latencies
from report import Results, Row

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


async def grow(connection: asyncpg.Connection, growth: int) -> int:
    """Add rows until the table holds `growth` times as many, over 1,000 meters: the query
    meter's own 2025 readings stay as they are, everything else is new."""
    years = max(1, growth // 10)
    first_year = 2026 - years
    await write_readings(
        connection,
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
