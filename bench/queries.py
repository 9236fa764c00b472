"""Query latencies: the service's answer against plain SQL's, call after call, and concurrent
clients of daily queries."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


QUERY_METER = "meter-042"


# What someone would write by hand for UTC buckets, on a session whose TimeZone is UTC.
PLAIN_SQL = """
    SELECT date_trunc('{unit}', time) AS bucket_start,
           sum(quantity_kwh), min(quantity_kwh), max(quantity_kwh), avg(quantity_kwh), count(*)
    FROM readings
    WHERE series_id = $1 AND time >= $2 AND time < $3
    GROUP BY 1
    ORDER BY 1
"""


def year_request(series_id: str, granularity: pb.Granularity, year: int = 2025) -> pb.QueryAggregatesRequest:
    """A query of one meter's calendar year in UTC."""
    request = pb.QueryAggregatesRequest(series_id=series_id, granularity=granularity)
    request.start_time.FromDatetime(datetime(year, 1, 1, tzinfo=UTC))
    request.end_time.FromDatetime(datetime(year + 1, 1, 1, tzinfo=UTC))
    return request


async def query_latencies(
    connection: asyncpg.Connection,
    stub: Stub,
    granularity: str,
    iterations: int,
    series_id: str = QUERY_METER,
    year: int = 2025,
) -> tuple[list[float], list[float]]:
    """Service and plain-SQL latencies for one meter's year in UTC, interleaved so both see the
    same conditions."""
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    request = year_request(
        series_id,
        pb.GRANULARITY_DAY_OF_MONTH if granularity == "daily" else pb.GRANULARITY_MONTHLY,
        year,
    )
    sql = PLAIN_SQL.format(unit="day" if granularity == "daily" else "month")

    def check(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record]) -> None:
        if not rows:
            raise RuntimeError(f"{series_id} has no readings in {year}")
        if not same_totals(response, rows):
            raise RuntimeError(f"{granularity}: the service and plain SQL disagree")

    return await interleaved_latencies(
        stub, request, connection, sql, (series_id, start, end), iterations, warm_up=20, check=check
    )


def same_totals(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record]) -> bool:
    """Whether the service's bucket totals are plain SQL's, to a millionth of a kWh: sums of
    floating-point readings differ in their last bits with the order of additions (rollups add
    hours, SQL adds readings)."""
    return [round(b.total_quantity_kwh, 6) for b in response.buckets] == [
        round(row["sum"], 6) for row in rows
    ]


async def interleaved_latencies(
    stub: Stub,
    request: pb.QueryAggregatesRequest,
    connection: asyncpg.Connection,
    sql: str,
    arguments: Sequence[object],
    iterations: int,
    warm_up: int,
    check: Callable[[pb.QueryAggregatesResponse, list[asyncpg.Record]], None],
) -> tuple[list[float], list[float]]:
    """The latencies of the service's answer and of plain SQL's, call after call, so that both
    see the same conditions; the warm-up calls (caches, prepared statements, connections) are
    not measured but checked to agree."""
    service: list[float] = []
    plain: list[float] = []
    for iteration in range(iterations + warm_up):
        started = time.perf_counter()
        response = await stub.QueryAggregates(request)
        middle = time.perf_counter()
        rows = await connection.fetch(sql, *arguments)
        ended = time.perf_counter()
        if iteration < warm_up:
            check(response, rows)
            continue
        service.append(middle - started)
        plain.append(ended - middle)
    return service, plain


async def query_clients(
    target: str, clients: int, seconds: float, meters: int, stop: asyncio.Event | None = None
) -> tuple[int, int, list[float]]:
    """`clients` concurrent callers of daily queries for random meters; (ok, errors, latencies)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        async with grpc.aio.insecure_channel(target) as channel:
            stub: Stub = pb_grpc.TimeseriesAggregationServiceStub(channel)  # type: ignore[assignment]
            while time.perf_counter() < deadline and not (stop and stop.is_set()):
                request = year_request(f"meter-{random.randrange(meters):03d}", pb.GRANULARITY_DAY_OF_MONTH)
                started = time.perf_counter()
                try:
                    await stub.QueryAggregates(request, timeout=30)
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), errors, latencies
