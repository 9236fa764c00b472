"""The query history: one entry per query, written with its first page, listed newest first."""

import json

import asyncpg

from timeseries_aggregation.domain.aggregation import AggregateQuery, TimeRange
from timeseries_aggregation.domain.history import HistoryEntry
from timeseries_aggregation.domain.paging import Page, PageRequest
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.storage.aggregate_sql import INSERT_HISTORY
from timeseries_aggregation.storage.database import Database

# The history record of a call, where it is not written by the page's statement itself.
_RECORD_QUERY = f"{INSERT_HISTORY} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)"

_LIST_HISTORY = """
    SELECT id, query_time, series_id, granularity, start_time, end_time, time_zone,
           page_size, continued_page, bucket_count, caller_name,
           selector_series_ids, selector_labels, group_by, include_empty_buckets
    FROM query_history
    WHERE id < $1
    ORDER BY id DESC
    LIMIT $2
"""


async def record_query(
    connection: asyncpg.Connection, query: AggregateQuery, page_size: int, buckets: int, caller_name: str
) -> None:
    """Write the history entry of a query from its first page of `buckets` buckets."""
    selector = query.selector
    await connection.execute(
        _RECORD_QUERY,
        query.series_id,
        query.granularity.value,
        query.time_range.start_time,
        query.time_range.end_time,
        query.time_zone,
        page_size,
        False,  # continued_page: true only in entries from when every page was recorded
        buckets,
        caller_name,
        list(selector.series_ids) if selector is not None and selector.series_ids is not None else None,
        json.dumps(selector.labels) if selector is not None else None,
        list(query.group_by),
        query.include_empty_buckets,
    )


async def list_history(database: Database, page: PageRequest[int]) -> Page[HistoryEntry]:
    """One page of the query history, newest first."""
    before_id = page.after if page.after is not None else 2**63 - 1
    async with database.query_connection() as connection:
        rows = await connection.fetch(_LIST_HISTORY, before_id, page.page_size + 1)
    entries = [_history_entry(row) for row in rows[: page.page_size]]
    return Page(entries, has_more=len(rows) > page.page_size)


def _history_entry(row: asyncpg.Record) -> HistoryEntry:
    selector = None
    if row["selector_labels"] is not None:
        series_ids = row["selector_series_ids"]
        selector = SeriesSelector(
            series_ids=tuple(series_ids) if series_ids is not None else None,
            labels=json.loads(row["selector_labels"]),
        )
    query = AggregateQuery(
        series_id=row["series_id"],
        granularity=Granularity(row["granularity"]),
        time_range=TimeRange(row["start_time"], row["end_time"]),
        time_zone=row["time_zone"],
        selector=selector,
        group_by=tuple(row["group_by"]),
        include_empty_buckets=row["include_empty_buckets"],
    )
    return HistoryEntry(
        id=row["id"],
        query_time=row["query_time"],
        query=query,
        page_size=row["page_size"],
        continued_page=row["continued_page"],
        bucket_count=row["bucket_count"],
        caller_name=row["caller_name"],
    )
