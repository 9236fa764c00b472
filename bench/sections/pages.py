"""Section 8: hourly pages of one meter's minute readings, by token against explicit ranges."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from data import FIGURES_FROM_READINGS, ROLLUP_TABLES, empty_tables, rebuilt_rollups, write_readings
from engine import Engine, settle
from figures import ms, percentile, verdict
from report import Results, Row

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
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
    await write_readings(connection, MINUTELY_LOAD, series_id, timedelta(days=days), timeout=3600)
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
