"""Section 7: daily totals of many meters selected by label, together and per site, against
the same aggregate by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from data import QUARTER_HOURLY_LOAD, ROLLUP_TABLES, empty_tables, rebuilt_rollups, write_readings
from engine import Engine, settle
from figures import ms, percentile
from queries import interleaved_latencies, same_totals
from report import Results, Row

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


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
        await write_readings(connection, QUARTER_HOURLY_LOAD, meters, timedelta(days=30), timeout=3600)
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
