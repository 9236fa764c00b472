"""Runs a page's plan (domain/query_plan.py) and the probes it may need, and returns rows: what
SQL they are is storage/aggregate_sql.py's, what they mean is the domain's."""

from collections import OrderedDict

import asyncpg

from timeseries_aggregation.domain.coverage import IntervalCount
from timeseries_aggregation.domain.query_plan import (
    BucketRow,
    FirstReading,
    FirstReadingProbe,
    PagePlan,
    PageRows,
    SelectedSpan,
    SelectedSpanProbe,
)
from timeseries_aggregation.errors import SeriesNotFoundError
from timeseries_aggregation.observability.tracing import database_span
from timeseries_aggregation.storage.aggregate_sql import (
    first_reading_sql,
    group_intervals_sql,
    portfolio_page_sql,
    selected_span_sql,
    series_page_sql,
)
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.query_history import record_query
from timeseries_aggregation.storage.series_catalog import check_series_exist

# The page's statement (with the history entry it records) as a database span names it.
_QUERY_SPAN_ATTRIBUTES = {"db.operation.name": "SELECT", "db.collection.name": "readings"}


class RolledUpSeries:
    """The series known to be rolled up, most recently asked last, up to a bound.

    A page of such a series is asked with the statement that reads its rollups; any other with
    the statement that reads readings alone, which plans in a fraction of the time (on
    Citus, which plans every query again on its worker, 5 ms against 13). That statement says
    whether the series is rolled up, so a series is known from its second page on. Answers
    never depend on this: the rollup statement reads readings wherever a series is not rolled up.
    """

    def __init__(self, bound: int = 100_000) -> None:
        self._bound = bound
        self._known: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, series_id: str) -> bool:
        if series_id in self._known:
            self._known.move_to_end(series_id)
            return True
        return False

    def add(self, series_id: str) -> None:
        self._known[series_id] = None
        if len(self._known) > self._bound:
            self._known.popitem(last=False)


_ROLLED_UP = RolledUpSeries()


async def find_first_reading(database: Database, probe: FirstReadingProbe) -> FirstReading:
    """Answer a FirstReadingProbe: one index probe and one catalog row."""
    sql, arguments = first_reading_sql(probe)
    async with database.query_connection() as connection:
        with database_span("first reading", _QUERY_SPAN_ATTRIBUTES):
            row = await connection.fetchrow(sql, *arguments)
    assert row is not None
    return FirstReading(known=row[0], time=row[1], spacing=row[2])


async def find_selected_span(database: Database, probe: SelectedSpanProbe) -> SelectedSpan:
    """Answer a SelectedSpanProbe from the catalog."""
    sql, arguments = selected_span_sql(probe.query)
    async with database.query_connection() as connection:
        with database_span("selected span", _QUERY_SPAN_ATTRIBUTES):
            row = await connection.fetchrow(sql, *arguments)
    assert row is not None
    return SelectedSpan(first=row[0], last=row[1])


async def fetch_series_page(database: Database, plan: PagePlan, caller_name: str) -> PageRows:
    """The rows of a page of one series; a first page is recorded in the history in the same
    transaction.

    One statement does both, except on Citus: there a statement that reads a distributed
    table and writes a local one runs as several distributed steps with intermediate results,
    and the read and the insert as two statements of one transaction took 7.7 ms where the one
    statement took 10.9 (one meter's year, daily buckets). A statement whose sum left a double
    (readings stored beyond the bound) is asked again, guarded (aggregate_sql.summed).
    """
    try:
        return await _fetch_series_page(database, plan, caller_name, guarded=False)
    except asyncpg.NumericValueOutOfRangeError:
        return await _fetch_series_page(database, plan, caller_name, guarded=True)


async def _fetch_series_page(database: Database, plan: PagePlan, caller_name: str, guarded: bool) -> PageRows:
    query = plan.query
    in_statement = plan.records_history and database.capabilities.reads_and_writes_in_one_statement
    rollups = query.series_id in _ROLLED_UP
    sql, arguments = series_page_sql(plan, caller_name if in_statement else None, rollups, guarded)
    async with database.query_connection() as connection:
        with database_span("query page", _QUERY_SPAN_ATTRIBUTES):
            if not plan.records_history or in_statement:
                rows = await connection.fetch(sql, *arguments)
                _check_series_known(plan, rows)
            else:
                async with connection.transaction():
                    rows = await connection.fetch(sql, *arguments)
                    _check_series_known(plan, rows)
                    found = sum(1 for row in rows if row[0] is not None)
                    await record_query(
                        connection, query, plan.page_size, min(found, plan.page_size), caller_name
                    )
    if not rollups and rows[0][7]:
        _ROLLED_UP.add(query.series_id)
    interval = rows[0][5]
    buckets: list[BucketRow] = [
        (number, (), total, minimum, maximum, count, 1)
        for number, total, minimum, maximum, count, *_ in rows
        if number is not None
    ]
    return PageRows(buckets, {(): [(interval, 1)]} if interval is not None else {}, rows[0][6])


def _check_series_known(plan: PagePlan, rows: list[asyncpg.Record]) -> None:
    """Raise SeriesNotFoundError when the statement found no catalog row (every row says so in
    its last column; there is always one)."""
    if not rows[0][8]:
        raise SeriesNotFoundError(plan.query.series_ids_field, [plan.query.series_id])


async def fetch_portfolio_page(database: Database, plan: PagePlan, caller_name: str) -> PageRows:
    """The rows of a page of selected series (in groups); a first page is recorded in the
    history in the same transaction. Series named by id must all be in the catalog (one
    primary key probe each, first). One statement joins the catalog with the readings; on
    Citus both are co-located, so every worker aggregates its own series at once. The catalog
    also says what each group declares (coverage) and, for empty buckets, which groups there
    are. A statement whose sum left a double is asked again, guarded (aggregate_sql.summed)."""
    try:
        return await _fetch_portfolio_page(database, plan, caller_name, guarded=False)
    except asyncpg.NumericValueOutOfRangeError:
        return await _fetch_portfolio_page(database, plan, caller_name, guarded=True)


async def _fetch_portfolio_page(
    database: Database, plan: PagePlan, caller_name: str, guarded: bool
) -> PageRows:
    query = plan.query
    sql, arguments = portfolio_page_sql(plan, guarded)
    intervals_sql, intervals_arguments = group_intervals_sql(query)
    async with database.query_connection() as connection:
        with database_span("query page", _QUERY_SPAN_ATTRIBUTES):
            async with connection.transaction():
                if query.members.series_ids is not None:
                    await check_series_exist(connection, query.members.series_ids, query.series_ids_field)
                rows = await connection.fetch(sql, *arguments)
                interval_rows = await connection.fetch(intervals_sql, *intervals_arguments)
                if plan.records_history:
                    # As many buckets as the page will hold, empty ones included.
                    buckets = _bucket_count(plan, rows, interval_rows)
                    await record_query(connection, query, plan.page_size, buckets, caller_name)
    intervals: dict[tuple[str, ...], list[IntervalCount]] = {}
    for row in interval_rows:
        declared = intervals.setdefault(tuple(row["group_values"]), [])
        if row["reading_interval_seconds"] is not None:
            declared.append((row["reading_interval_seconds"], row["series"]))
    buckets_found: list[BucketRow] = [
        (number, tuple(group), total, minimum, maximum, count, series)
        for number, total, minimum, maximum, count, series, group in rows
    ]
    return PageRows(buckets_found, intervals)


def _bucket_count(plan: PagePlan, rows: list[asyncpg.Record], interval_rows: list[asyncpg.Record]) -> int:
    """The buckets of a first page, as the history records it: with empty buckets, every
    bucket of the window for every group, up to a page."""
    if not plan.fills_empty_buckets:
        return min(len(rows), plan.page_size)
    groups = len({tuple(row["group_values"]) for row in interval_rows})
    return min(groups * plan.buckets_per_group, plan.page_size)
