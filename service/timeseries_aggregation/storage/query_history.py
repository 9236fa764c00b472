"""The query history: one entry per query, written with its first page, listed newest first."""

import json

import asyncpg

from timeseries_aggregation.domain.aggregation import AggregateQuery, TimeRange
from timeseries_aggregation.domain.history import HistoryEntry, recorded_selector
from timeseries_aggregation.domain.paging import Page, PageRequest
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.storage.database import Database

# The history record of a call, where it is not written by the page's statement itself (which
# records one-series queries only: they have no selector to shorten).
_RECORD_QUERY = """
    INSERT INTO query_history (
        series_id, granularity, start_time, end_time, time_zone,
        page_size, continued_page, bucket_count, caller_name,
        selector_series_ids, selector_labels, group_by, include_empty_buckets,
        selector_omitted_series_ids, selector_omitted_labels, selector_truncated
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16)
"""

_HISTORY_COLUMNS = """
    SELECT id, query_time, series_id, granularity, start_time, end_time, time_zone,
           page_size, continued_page, bucket_count, caller_name,
           selector_series_ids, selector_labels, group_by, include_empty_buckets,
           selector_omitted_series_ids, selector_omitted_labels, selector_truncated
    FROM query_history
"""
_LIST_HISTORY = f"{_HISTORY_COLUMNS} WHERE id < $1 ORDER BY id DESC LIMIT $2"
# One caller's entries come from the index on (caller_name, id) (migration 0012), read backwards
# from the page's position: other callers' entries are never read. PostgreSQL would rather
# filter the primary key's order when callers take turns, which costs little there but reads
# the whole table for a caller whose entries are few or old; a prepared statement's generic plan
# cannot tell the two apart. So the order names caller_name too, and the caller is matched by
# a range of one value rather than by =, which would make caller_name a constant that the
# planner drops from the order: only the caller index then gives the order without a sort.
LIST_CALLERS_HISTORY = f"""{_HISTORY_COLUMNS}
    WHERE caller_name >= $3 AND caller_name <= $3 AND id < $1
    ORDER BY caller_name DESC, id DESC
    LIMIT $2
"""


async def record_query(
    connection: asyncpg.Connection, query: AggregateQuery, page_size: int, buckets: int, caller_name: str
) -> None:
    """Write the history entry of a query from its first page of `buckets` buckets."""
    recorded = recorded_selector(query.selector) if query.selector is not None else None
    selector = recorded.selector if recorded is not None else None
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
        recorded.omitted_series_ids if recorded is not None else 0,
        recorded.omitted_labels if recorded is not None else 0,
        recorded.truncated if recorded is not None else False,
    )


async def list_history(
    database: Database, page: PageRequest[int], caller_name: str | None
) -> Page[HistoryEntry]:
    """One page of the query history, newest first: the entries of the caller named, or of
    every caller for None."""
    before_id = page.after if page.after is not None else 2**63 - 1
    async with database.query_connection() as connection:
        if caller_name is None:
            rows = await connection.fetch(_LIST_HISTORY, before_id, page.page_size + 1)
        else:
            rows = await connection.fetch(LIST_CALLERS_HISTORY, before_id, page.page_size + 1, caller_name)
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
        omitted_series_ids=row["selector_omitted_series_ids"],
        omitted_labels=row["selector_omitted_labels"],
        selector_truncated=row["selector_truncated"],
    )
