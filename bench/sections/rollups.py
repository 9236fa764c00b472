"""Section 9: minute readings ingested with rollups maintained, then queried in local days and
months against plain SQL over the readings."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import numpy as np
from data import (
    FIGURES_FROM_READINGS,
    ROLLUP_TABLES,
    UNIX_EPOCH,
    copy_readings,
    empty_tables,
    rebuilt_rollups,
    stream,
    write_readings,
)
from engine import Engine, settle
from figures import ms, percentile, rate, verdict
from queries import interleaved_latencies, same_totals
from report import Results, Row

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.client import series_messages

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


ROLLUP_QUERY_ZONE = "Europe/Berlin"
# The same question of the raw readings, by hand: local days (months) of one meter's year.
PLAIN_ZONED_SQL = """
    SELECT date_trunc('{unit}', time AT TIME ZONE $4) AS local_start,
           sum(quantity_kwh), min(quantity_kwh), max(quantity_kwh), count(*)
    FROM readings
    WHERE series_id = $1 AND time >= $2 AND time < $3
    GROUP BY 1
    ORDER BY 1
"""
MINUTE_METERS_LOAD = """
    INSERT INTO readings (series_id, time, quantity_kwh)
    SELECT format('minute-meter-%s', meter), instant,
           0.001 * (1 + (extract(epoch FROM instant)::bigint / 60 + meter) % 97)
    FROM generate_series(1, $1) AS meter,
         generate_series($2::timestamptz, $3::timestamptz - interval '1 minute', interval '1 minute')
             AS instant
"""


def minute_messages(
    series_id: str, start: datetime, minutes: int, size: int
) -> Iterator[pb.IngestReadingsRequest]:
    first = (start - UNIX_EPOCH) // timedelta(microseconds=1)
    times = first + np.arange(minutes, dtype=np.int64) * 60_000_000
    quantities = 0.001 * (1 + (np.arange(minutes) % 97))
    return series_messages(series_id, times, quantities, size)


async def rollups_section(
    results: Results,
    connection: asyncpg.Connection,
    stub: Stub,
    engine: Engine,
    database_url: str,
    arguments: argparse.Namespace,
) -> None:
    """Minute readings: ingest with rollups maintained against raw COPY, then one meter's year
    (of five in the table) queried daily and monthly in Berlin against the same aggregate of
    the raw readings."""
    meters, days, iterations = arguments.rollup_meters, arguments.rollup_days, arguments.rollup_iterations
    start, minutes, size = datetime(2025, 1, 1, tzinfo=UTC), days * 1440, 20_000
    readings = meters * minutes
    records = [
        (f"minute-meter-{meter}", start + timedelta(minutes=minute), 0.001 * (1 + minute % 97))
        for meter in range(meters)
        for minute in range(minutes)
    ]
    messages = [
        message
        for meter in range(meters)
        for message in minute_messages(f"minute-meter-{meter}", start, minutes, size)
    ]
    raw, service = float("inf"), float("inf")
    for _ in range(2):
        await empty_tables(connection)
        raw = min(raw, await copy_readings(connection, records))
        await empty_tables(connection)
        service = min(service, await stream(stub, messages))
    hours: int = await connection.fetchval("SELECT count(*) FROM hourly_rollups")
    rolled_up: int = await connection.fetchval("SELECT count(*) FROM series WHERE rolled_up")
    if (hours, rolled_up) != (meters * days * 24, meters):
        raise RuntimeError(f"ingest left {hours} hourly rollups of {rolled_up} series")
    del records, messages
    ratio = raw / service
    results.add(
        Row(
            "9 rollups",
            f"ingest of {readings:,} 1-minute readings ({meters} meters), rollups maintained, "
            f"{size:,} per message, vs raw COPY into readings alone (best of 2)",
            rate(readings, service),
            rate(readings, raw),
            f"{ratio:.2f}",
            ">= 0.85",
            verdict(ratio >= 0.85),
            summary="ingest of minute readings with rollups",
        )
    )

    # One meter's year among five, loaded by hand and rolled up by the operator's rebuild.
    await empty_tables(connection)
    query_days = arguments.rollup_query_days
    year_end = start + timedelta(days=query_days)
    await write_readings(connection, MINUTE_METERS_LOAD, 5, start, year_end, timeout=3600)
    await connection.execute(FIGURES_FROM_READINGS, timeout=3600)
    count, seconds = await rebuilt_rollups(connection, database_url)
    results.add(
        Row("9 rollups", f"rollups rebuilt for {count} meters' 1-minute readings", f"{seconds:.1f} s")
    )
    await settle(connection, engine)
    await connection.execute(f"VACUUM ANALYZE series, {ROLLUP_TABLES}")
    series_id = "minute-meter-3"
    for granularity, unit, target in (
        (pb.GRANULARITY_DAY_OF_MONTH, "day", 0.05),
        (pb.GRANULARITY_MONTHLY, "month", 0.03),
    ):
        request = pb.QueryAggregatesRequest(
            series_id=series_id, granularity=granularity, time_zone=ROLLUP_QUERY_ZONE, page_size=1_000
        )
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(year_end)

        def check(response: pb.QueryAggregatesResponse, rows: list[asyncpg.Record], unit: str = unit) -> None:
            counts = [bucket.reading_count for bucket in response.buckets]
            if not rows or not same_totals(response, rows) or counts != [row["count"] for row in rows]:
                raise RuntimeError(f"rollups, {unit}s: the service and plain SQL disagree")

        service_times, plain_times = await interleaved_latencies(
            stub,
            request,
            connection,
            PLAIN_ZONED_SQL.format(unit=unit),
            (series_id, start, year_end, ROLLUP_QUERY_ZONE),
            iterations,
            5,
            check,
        )
        ratio = percentile(service_times, 0.5) / percentile(plain_times, 0.5)
        results.add(
            Row(
                "9 rollups",
                f"{unit}s in {ROLLUP_QUERY_ZONE}, one meter's {query_days} days of 1-minute readings "
                f"({query_days * 1440:,} of {5 * query_days * 1440:,}), vs plain SQL over the "
                "readings: p50 / p99",
                f"{ms(percentile(service_times, 0.5))} / {ms(percentile(service_times, 0.99))}",
                f"{ms(percentile(plain_times, 0.5))} / {ms(percentile(plain_times, 0.99))}",
                f"{ratio:.3f}",
                f"<= {target}",
                verdict(ratio <= target),
                summary=f"minute readings, {unit}s of a year in Berlin: p50 / p99",
            )
        )
    await empty_tables(connection)
