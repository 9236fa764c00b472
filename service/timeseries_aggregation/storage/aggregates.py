"""Aggregation queries and the query history, recorded in the query's own transaction."""

from datetime import datetime

import asyncpg

from timeseries_aggregation.domain.aggregation import (
    AggregateQuery,
    Bucket,
    Granularity,
    TimeRange,
    period_label,
)
from timeseries_aggregation.domain.history import HistoryEntry
from timeseries_aggregation.domain.paging import Page, PageRequest
from timeseries_aggregation.domain.readings import EARLIEST_TIME
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.storage.database import Database

# Bucket start of each reading, in the zone $2. Hours are cut at the local top of the hour
# relative to the reading itself (time minus its local minutes and seconds), so the two
# 01:00 hours of a DST fall-back night stay two buckets, and half-hour zones work.
_HOUR_START = "time - ((time AT TIME ZONE $2) - date_trunc('hour', time AT TIME ZONE $2))"
_PLAIN_BUCKET_STARTS = {
    Granularity.HOURLY: _HOUR_START,
    Granularity.DAY_OF_MONTH: "date_trunc('day', time, $2)",
    Granularity.MONTHLY: "date_trunc('month', time, $2)",
}
# TimescaleDB's time_bucket with a time zone cuts days and months at local midnight too.
_TIMESCALE_BUCKET_STARTS = {
    Granularity.HOURLY: _HOUR_START,
    Granularity.DAY_OF_MONTH: "time_bucket(INTERVAL '1 day', time, $2)",
    Granularity.MONTHLY: "time_bucket(INTERVAL '1 month', time, $2)",
}
# The next bucket's start, computed from a bucket start in local time.
_BUCKET_ENDS = {
    Granularity.HOURLY: "bucket_start + INTERVAL '1 hour'",
    Granularity.DAY_OF_MONTH: (
        "date_trunc('day', (bucket_start AT TIME ZONE $2) + INTERVAL '1 day') AT TIME ZONE $2"
    ),
    Granularity.MONTHLY: (
        "date_trunc('month', (bucket_start AT TIME ZONE $2) + INTERVAL '1 month') AT TIME ZONE $2"
    ),
}


def _aggregate_sql(granularity: Granularity, timescaledb: bool) -> str:
    bucket_starts = _TIMESCALE_BUCKET_STARTS if timescaledb else _PLAIN_BUCKET_STARTS
    # $3/$4 bound the readings; $5 is the last bucket already returned (keyset paging): a
    # bucket after it holds only readings at or after it, so $5 also bounds the scan.
    return f"""
        SELECT bucket_start, {_BUCKET_ENDS[granularity]} AS bucket_end,
               total, minimum, maximum, mean, reading_count
        FROM (
            SELECT {bucket_starts[granularity]} AS bucket_start,
                   sum(quantity_kwh) AS total,
                   min(quantity_kwh) AS minimum,
                   max(quantity_kwh) AS maximum,
                   avg(quantity_kwh) AS mean,
                   count(*) AS reading_count
            FROM readings
            WHERE series_id = $1 AND time >= $3 AND time < $4 AND time >= $5
            GROUP BY 1
        ) AS buckets
        WHERE bucket_start > $5
        ORDER BY bucket_start
        LIMIT $6
    """


_RECORD_QUERY = """
    INSERT INTO query_history (
        series_id, granularity, start_time, end_time, time_zone,
        page_size, continued_page, bucket_count
    ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

_LIST_HISTORY = """
    SELECT id, query_time, series_id, granularity, start_time, end_time, time_zone,
           page_size, continued_page, bucket_count
    FROM query_history
    WHERE id < $1
    ORDER BY id DESC
    LIMIT $2
"""


async def query_aggregates(
    database: Database, query: AggregateQuery, page: PageRequest[datetime]
) -> Page[Bucket]:
    """One page of buckets, and the history record of the call, in one transaction."""
    time_range = query.time_range
    # One row more than the page tells whether another page follows.
    arguments = (
        query.series_id,
        query.time_zone,
        time_range.lower_bound,
        time_range.upper_bound,
        page.after or EARLIEST_TIME,
        page.page_size + 1,
    )
    sql = _aggregate_sql(query.granularity, database.timescaledb)
    async with database.transaction() as connection:
        try:
            rows = await connection.fetch(sql, *arguments)
        except asyncpg.InvalidParameterValueError as error:
            # The service's and the database's zone lists can differ by a release of tzdata.
            raise InvalidArgumentError(
                "time_zone", f"{query.time_zone!r} is not a time zone the database knows"
            ) from error
        buckets = [_bucket(row, query) for row in rows[: page.page_size]]
        await connection.execute(
            _RECORD_QUERY,
            query.series_id,
            query.granularity.value,
            time_range.start_time,
            time_range.end_time,
            query.time_zone,
            page.page_size,
            page.after is not None,
            len(buckets),
        )
    return Page(buckets, has_more=len(rows) > page.page_size)


def _bucket(row: asyncpg.Record, query: AggregateQuery) -> Bucket:
    return Bucket(
        start_time=row["bucket_start"],
        end_time=row["bucket_end"],
        period=period_label(row["bucket_start"], query.granularity, query.zone),
        total_quantity_kwh=row["total"],
        min_quantity_kwh=row["minimum"],
        max_quantity_kwh=row["maximum"],
        mean_quantity_kwh=row["mean"],
        reading_count=row["reading_count"],
    )


async def list_history(database: Database, page: PageRequest[int]) -> Page[HistoryEntry]:
    """One page of the query history, newest first."""
    before_id = page.after if page.after is not None else 2**63 - 1
    async with database.transaction() as connection:
        rows = await connection.fetch(_LIST_HISTORY, before_id, page.page_size + 1)
    entries = [_history_entry(row) for row in rows[: page.page_size]]
    return Page(entries, has_more=len(rows) > page.page_size)


def _history_entry(row: asyncpg.Record) -> HistoryEntry:
    query = AggregateQuery(
        series_id=row["series_id"],
        granularity=Granularity(row["granularity"]),
        time_range=TimeRange(row["start_time"], row["end_time"]),
        time_zone=row["time_zone"],
    )
    return HistoryEntry(
        id=row["id"],
        query_time=row["query_time"],
        query=query,
        page_size=row["page_size"],
        continued_page=row["continued_page"],
        bucket_count=row["bucket_count"],
    )
