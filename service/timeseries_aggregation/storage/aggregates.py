"""Aggregation queries (of one series, or of the series a selector picks, in groups) and the
query history: one entry per query, recorded in the transaction that answers its first page."""

import functools
import json
import re
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timedelta

import asyncpg

from timeseries_aggregation.domain.aggregation import (
    GROUP_BY_SERIES,
    AggregateQuery,
    Bucket,
    FixedWidthBuckets,
    TimeRange,
    credible_total,
    fixed_width_buckets,
)
from timeseries_aggregation.domain.batch import unix_micros
from timeseries_aggregation.domain.bucketing import bucket_containing, bucket_reach, buckets_between
from timeseries_aggregation.domain.coverage import IntervalCount, expected_reading_count
from timeseries_aggregation.domain.history import HistoryEntry
from timeseries_aggregation.domain.paging import GroupPosition, Page, PageRequest
from timeseries_aggregation.domain.rollups import CUT_NAMES, RollupPlan, rollup_plan, window_cuts
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.errors import InvalidArgumentError, SeriesNotFoundError
from timeseries_aggregation.granularities import GRANULARITIES, Granularity, GranularityInfo
from timeseries_aggregation.observability.tracing import database_span
from timeseries_aggregation.storage.aggregate_sources import (
    aggregates,
    cuts_sql,
    portfolio_source,
    rolled_up_spans,
    single_series_source,
    summed,
)
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.series_catalog import check_series_exist

# Each reading's bucket is grouped by a key computed per row; the bucket's start follows
# from the key once per bucket. Per-row time zone arithmetic is what a query spends most
# of its time on, so the cheapest correct key is chosen:
# - buckets of fixed width (see fixed_width_buckets): date_bin, plain integer arithmetic;
# - other hours, half and quarter hours: the reading minus its local minutes and seconds
#   past the bucket's local start, so the two 02:00 hours of a DST fall-back night stay two
#   buckets;
# - other days, and weeks, months, quarters and years: the local calendar unit (a timestamp
#   without zone), converted to the first instant of that unit once per bucket.
_LOCAL = "time AT TIME ZONE $2"
# date_trunc's name of the calendar unit a bucket is, by its local length (ISO weeks start on
# Monday, as the domain's do).
_TRUNCATED_TO = {
    (1, "hours"): "hour",
    (1, "days"): "day",
    (1, "weeks"): "week",
    (1, "months"): "month",
    (3, "months"): "quarter",
    (12, "months"): "year",
}


def _interval(info: GranularityInfo) -> str:
    return f"INTERVAL '{info.step} {info.step_unit}'"


def _local_clock_start(info: GranularityInfo) -> str:
    if info.step_unit == "minutes":
        local_start = f"date_bin({_interval(info)}, {_LOCAL}, TIMESTAMP '2000-01-01')"
    else:
        local_start = f"date_trunc('{_TRUNCATED_TO[info.step, info.step_unit]}', {_LOCAL})"
    return f"time - (({_LOCAL}) - {local_start})"


_LOCAL_CLOCK_STARTS = {info.granularity: _local_clock_start(info) for info in GRANULARITIES if info.clock}
_CALENDAR_UNITS = {
    info.granularity: _TRUNCATED_TO[info.step, info.step_unit] for info in GRANULARITIES if not info.clock
}


def _first_instant_of(local_midnight: str) -> str:
    """SQL for the first instant at which the clock in zone $2 shows `local_midnight`.

    PostgreSQL turns a local time that happens twice into its later instant; where clocks go
    back from 01:00 to midnight (Havana, the Azores) a day starts at the earlier one.
    """
    instant = f"(({local_midnight}) AT TIME ZONE $2)"
    hour_before = f"({instant} - INTERVAL '1 hour')"
    earlier = f"({hour_before} AT TIME ZONE $2) = ({local_midnight})"
    return f"CASE WHEN {earlier} THEN {hour_before} ELSE {instant} END"


def _bucket_key_and_start(granularity: Granularity, fixed: FixedWidthBuckets | None) -> tuple[str, str]:
    """SQL for the per-row grouping key, and for the bucket start computed from `bucket_key`."""
    if fixed is not None:
        origin = f"to_timestamp({fixed.origin_unix_seconds})"
        return f"date_bin(INTERVAL '{fixed.width_seconds} seconds', time, {origin})", "bucket_key"
    if granularity in _LOCAL_CLOCK_STARTS:
        return _LOCAL_CLOCK_STARTS[granularity], "bucket_key"
    # Also on TimescaleDB: its time_bucket(..., zone) puts the first of two midnights in the
    # day before, where the local date is the rule.
    return f"date_trunc('{_CALENDAR_UNITS[granularity]}', time AT TIME ZONE $2)", _first_instant_of(
        "bucket_key"
    )


# The next bucket's start, computed from a bucket start in local time.
_BUCKET_ENDS = {
    info.granularity: f"bucket_start + {_interval(info)}"
    if info.clock
    else _first_instant_of(
        f"date_trunc('{_CALENDAR_UNITS[info.granularity]}', "
        f"(bucket_start AT TIME ZONE $2) + {_interval(info)})"
    )
    for info in GRANULARITIES
}
# strftime's fields of the labels (granularities.py), as to_char patterns; letters are quoted.
_TO_CHAR_FIELDS = {
    "%Y": "YYYY",
    "%m": "MM",
    "%d": "DD",
    "%H": "HH24",
    "%M": "MI",
    "%G": "IYYY",
    "%V": "IW",
    "%q": "Q",
}


def _to_char_pattern(label_format: str) -> str:
    """The to_char pattern that labels as the strftime format does (2025-10-01T13:00, 2025-W40)."""
    parts = re.split(r"(%.)", label_format)
    return "".join(
        _TO_CHAR_FIELDS[part] if part.startswith("%") else re.sub(r"([A-Za-z]+)", r'"\1"', part)
        for part in parts
    )


# Period labels in the query's zone: 2025-10-01T13:15, 2025-10-01T13:00, 2025-10-01,
# 2025-W40 (ISO week-numbering year and week), 2025-10, 2025-Q4, 2025.
_PERIOD_PATTERNS = {info.granularity: _to_char_pattern(info.label_format) for info in GRANULARITIES}


# A history entry's columns, in the order both ways of recording a call give them.
_INSERT_HISTORY = """
    INSERT INTO query_history (
        series_id, granularity, start_time, end_time, time_zone,
        page_size, continued_page, bucket_count, caller_name,
        selector_series_ids, selector_labels, group_by, include_empty_buckets
    )"""


# The page's statement (with the history entry it records) as a database span names it.
_QUERY_SPAN_ATTRIBUTES = {"db.operation.name": "SELECT", "db.collection.name": "readings"}


@functools.cache
def _aggregate_sql(
    granularity: Granularity,
    fixed: FixedWidthBuckets | None,
    plan: RollupPlan | None,
    continued: bool,
    records_history: bool,
    whole_range: bool,
    guarded: bool,
) -> str:
    """One page of buckets, and (when `records_history`, on a query's first page) the history
    record of the query in the same statement.

    Parameters: $1 series, $2 zone, $3/$4 the readings' bounds, $5 page size; when recording,
    $6 to $9 the query and its caller as recorded; on continued pages the last bucket already
    returned (the page reads from that bucket's end); then the page's horizon and the longest bucket (see
    aggregate_statement).

    A page reads only what it can return: from the first reading after the cursor up to the
    horizon, far enough for page size + 1 buckets where readings are as dense as the buckets
    (or, where they are sparser, as the series's average spacing in the catalog says), plus
    the longest bucket, so that every bucket starting before the horizon is whole. The buckets
    starting at or after it are left to the next page; the second last column says whether a
    reading lies past the horizon, for a page that ends before it is full, then whether the
    series is rolled up, and last whether the catalog holds the series at all (when it does
    not, the call is NOT_FOUND, and the history entry is not written).

    With `whole_range`, the range holds fewer buckets than a page (a year by day or month,
    the common question): the page reads the range, and the first reading, the horizon and the
    readings past it are not looked for (the last but one column is false, and the horizon
    parameters are not given). That is two index probes fewer, and on TimescaleDB and Citus two
    scans of the readings fewer to plan.

    With a rollup `plan`, a rolled-up series' buckets are summed from its rollups where they
    hold whole hours or days (see aggregate_sources); `guarded` sums as aggregate_sources.summed says.
    """
    bucket_key, bucket_start = _bucket_key_and_start(granularity, fixed)
    if fixed is not None:
        bucket_end = f"bucket_start + INTERVAL '{fixed.width_seconds} seconds'"
    else:
        bucket_end = _BUCKET_ENDS[granularity]
    parameters = iter(range(10 if records_history else 6, 20))
    cursor = f"${next(parameters)}" if continued else ""
    # Past the cursor's bucket: its readings, already returned, are not read again.
    cursor_end = bucket_end.replace("bucket_start", f"{cursor}::timestamptz")
    after_cursor = f"AND time >= {cursor_end}" if continued else ""
    if whole_range:
        # Typed: the window's cuts select them, where a bare parameter would be taken for text.
        first_time = f"greatest($3::timestamptz, {cursor_end})" if continued else "$3::timestamptz"
        scan_end = "$4::timestamptz"
        page_filters = []
        readings_beyond = "false"
    else:
        first_time, scan_end = "(SELECT first_time FROM reach)", "(SELECT scan_end FROM bounds)"
        page_filters = ["bucket_start < (SELECT horizon FROM bounds)"]
        readings_beyond = """EXISTS (
                   SELECT 1 FROM readings
                   WHERE series_id = $1 AND time >= (SELECT horizon FROM bounds) AND time < $4
               )"""
    if continued:
        page_filters.append(f"bucket_start > {cursor}")
    recorded = f"""
        , recorded AS (
            {_INSERT_HISTORY}
            SELECT $1, $6, $7, $8, $2, $5::integer, false, least(count(*), $5::integer), $9,
                   NULL, NULL, '{{}}'::text[], false
            FROM page
            HAVING EXISTS (SELECT FROM series WHERE series_id = $1)
        )"""
    if plan is None:
        cuts = ""
        grouped = f"""
                    SELECT {bucket_key} AS bucket_key,
                           {summed(guarded, "quantity_kwh", "quantity_kwh", "quantity_kwh")} AS total,
                           min(quantity_kwh) AS minimum,
                           max(quantity_kwh) AS maximum,
                           count(*) AS reading_count
                    FROM readings
                    WHERE series_id = $1 AND time >= $3 AND time < $4 {after_cursor}
                      {"" if whole_range else _SCAN_BOUNDS}
                    GROUP BY 1"""
    else:
        window = cuts_sql(first_time, scan_end, plan, "SELECT rolled_up FROM series WHERE series_id = $1")
        cuts = f"cuts AS ({window})"
        grouped = f"""
                    SELECT {bucket_key} AS bucket_key, {aggregates(guarded)}
                    FROM ({single_series_source(plan, bucket_key if fixed else None)}) AS source
                    GROUP BY 1"""
    # One row more than the page tells whether another page follows.
    page = f"""page AS (
            SELECT bucket_start, total, minimum, maximum, reading_count
            FROM (
                SELECT {bucket_start} AS bucket_start, total, minimum, maximum, reading_count
                FROM ({grouped}
                    -- A fence: the page's filters on the bucket start are applied to the
                    -- buckets, not pushed down to compute every row's bucket start.
                    OFFSET 0
                ) AS grouped
            ) AS buckets
            {"WHERE " + " AND ".join(page_filters) if page_filters else ""}
            ORDER BY bucket_start
            LIMIT $5::integer + 1
        )"""
    reach = "" if whole_range else _reach_sql(after_cursor, parameters)
    ctes = ", ".join(cte for cte in (reach, cuts, page) if cte)
    return f"""
        WITH {ctes}{recorded if records_history else ""}
        SELECT extract(epoch FROM bucket_start)::bigint,
               extract(epoch FROM {bucket_end})::bigint,
               to_char(bucket_start AT TIME ZONE $2, '{_PERIOD_PATTERNS[granularity]}'),
               total, minimum, maximum, reading_count,
               catalog.reading_interval_seconds,
               {readings_beyond},
               coalesce(catalog.rolled_up, false),
               catalog.series_id IS NOT NULL
        FROM (SELECT) AS one
        LEFT JOIN (
            SELECT series_id, reading_interval_seconds, rolled_up FROM series WHERE series_id = $1
        ) AS catalog ON true
        LEFT JOIN page ON true
        ORDER BY bucket_start
    """


# Both ends of a bounded page's scan from the statement itself: where the planner cannot tell
# how far they reach, it takes them for a narrow range and the index for it.
_SCAN_BOUNDS = "AND time >= (SELECT first_time FROM reach) AND time < (SELECT scan_end FROM bounds)"


def _reach_sql(after_cursor: str, parameters: Iterator[int]) -> str:
    """The first reading of a page, and how far the page reads past it (see _aggregate_sql)."""
    horizon, longest = f"${next(parameters)}::interval", f"${next(parameters)}::interval"
    return f"""reach AS (
            SELECT first.time AS first_time,
                   greatest({horizon}, spacing.average * ($5::integer + 2)) AS span
            FROM (
                -- Not min(time): with a table's statistics still unknown, the planner may
                -- aggregate the whole range for it; ordered and limited, it reads one row.
                SELECT time FROM readings
                WHERE series_id = $1 AND time >= $3 AND time < $4 {after_cursor}
                ORDER BY time
                LIMIT 1
            ) AS first
            LEFT JOIN (
                SELECT (last_reading_time - first_reading_time) / greatest(reading_count - 1, 1) AS average
                FROM series WHERE series_id = $1
            ) AS spacing ON true
        ), bounds AS (
            -- Past the range's end, the range's end (and no interval arithmetic that could
            -- leave the timestamp range).
            SELECT CASE WHEN span + {longest} >= $4 - first_time THEN $4
                        ELSE first_time + span END AS horizon,
                   CASE WHEN span + {longest} >= $4 - first_time THEN $4
                        ELSE first_time + span + {longest} END AS scan_end
            FROM reach
        )"""


# The history record of a call, where it is not written by the aggregate statement itself.
_RECORD_QUERY = f"{_INSERT_HISTORY} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)"


_LIST_HISTORY = """
    SELECT id, query_time, series_id, granularity, start_time, end_time, time_zone,
           page_size, continued_page, bucket_count, caller_name,
           selector_series_ids, selector_labels, group_by, include_empty_buckets
    FROM query_history
    WHERE id < $1
    ORDER BY id DESC
    LIMIT $2
"""


def aggregate_statement(
    query: AggregateQuery,
    page: PageRequest[datetime],
    caller_name: str,
    records_history: bool = True,
    rollups: bool = True,
    guarded: bool = False,
) -> tuple[str, list[object]]:
    """The statement that answers one page of `query`, with its arguments; on the first page it
    also records the query in the history unless `records_history` is false (a continued page
    never records), and reads the series' rollups where its buckets allow unless `rollups` is
    false (then it reads readings only); `guarded` as aggregate_sources.summed says."""
    records_history = records_history and page.after is None
    time_range = query.time_range
    arguments: list[object] = [
        query.series_id,
        query.time_zone,
        time_range.lower_bound,
        time_range.upper_bound,
        page.page_size,
    ]
    if records_history:
        arguments += [query.granularity.value, time_range.start_time, time_range.end_time, caller_name]
    if page.after is not None:
        arguments.append(page.after)
    # As far as page size + 2 buckets reach (the cursor's own may come first), then a bucket.
    horizon = bucket_reach(query.granularity, page.page_size + 2)
    whole_range = time_range.upper_bound - time_range.lower_bound <= horizon
    if not whole_range:
        arguments += [horizon, bucket_reach(query.granularity, 1)]
    fixed = fixed_width_buckets(query.granularity, query.time_zone)
    plan = rollup_plan(query.granularity, query.time_zone) if rollups else None
    sql = _aggregate_sql(
        query.granularity, fixed, plan, page.after is not None, records_history, whole_range, guarded
    )
    return sql, arguments


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


async def query_aggregates(
    database: Database, query: AggregateQuery, page: PageRequest[datetime], caller_name: str
) -> Page[Bucket]:
    """One page of buckets; a first page is recorded in the history in the same transaction.

    One statement does both, except on Citus: there a statement that reads a distributed
    table and writes a local one runs as several distributed steps with intermediate results,
    and the read and the insert as two statements of one transaction took 7.7 ms where the one
    statement took 10.9 (one meter's year, daily buckets). A statement whose sum left a double
    (readings stored beyond the bound) is asked again, guarded (aggregate_sources.summed).
    """
    try:
        return await _query_aggregates(database, query, page, caller_name, guarded=False)
    except asyncpg.NumericValueOutOfRangeError:
        return await _query_aggregates(database, query, page, caller_name, guarded=True)


async def _query_aggregates(
    database: Database, query: AggregateQuery, page: PageRequest[datetime], caller_name: str, guarded: bool
) -> Page[Bucket]:
    first_page = page.after is None
    records_in_statement = first_page and database.capabilities.reads_and_writes_in_one_statement
    rollups = query.series_id in _ROLLED_UP
    sql, arguments = aggregate_statement(query, page, caller_name, records_in_statement, rollups, guarded)
    async with database.query_connection() as connection:
        try:
            with database_span("query page", _QUERY_SPAN_ATTRIBUTES):
                if not first_page or records_in_statement:
                    rows = await connection.fetch(sql, *arguments)
                    _check_series_known(query, rows)
                else:
                    async with connection.transaction():
                        rows = await connection.fetch(sql, *arguments)
                        _check_series_known(query, rows)
                        found = sum(1 for row in rows if row[0] is not None)
                        await _record(connection, query, page.page_size, found, caller_name)
        except asyncpg.InvalidParameterValueError as error:
            raise _unknown_zone(query) from error
    if not rollups and rows[0][9]:
        _ROLLED_UP.add(query.series_id)
    return _single_series_page(query, page, rows)


def _check_series_known(query: AggregateQuery, rows: list[asyncpg.Record]) -> None:
    """Raise SeriesNotFoundError when the one-series statement found no catalog row (every row
    says so in its last column; there is always one)."""
    if not rows[0][10]:
        raise SeriesNotFoundError(query.series_ids_field, [query.series_id])


def _single_series_page(
    query: AggregateQuery, page: PageRequest[datetime], rows: list[asyncpg.Record]
) -> Page[Bucket]:
    # Without a bucket the statement still returns one row, saying whether readings lie past
    # the page's horizon; with buckets, the rows come ordered, and none lacks a start.
    readings_beyond = rows[0][8]
    if rows[0][0] is None:
        return Page([], has_more=readings_beyond)
    interval = rows[0][7]
    if interval is None:
        buckets = [
            Bucket(start, end, period, credible_total(total, minimum, maximum), minimum, maximum, count)
            for start, end, period, total, minimum, maximum, count, *_ in rows[: page.page_size]
        ]
    else:
        range_start, range_end = _range_micros(query)
        buckets = [
            Bucket(
                start,
                end,
                period,
                credible_total(total, minimum, maximum),
                minimum,
                maximum,
                count,
                expected_reading_count=expected_reading_count(
                    start, end, range_start, range_end, [(interval, 1)]
                ),
            )
            for start, end, period, total, minimum, maximum, count, *_ in rows[: page.page_size]
        ]
    return Page(buckets, has_more=len(rows) > page.page_size or readings_beyond)


def _range_micros(query: AggregateQuery) -> tuple[int, int]:
    return unix_micros(query.time_range.lower_bound), unix_micros(query.time_range.upper_bound)


def _unknown_zone(query: AggregateQuery) -> InvalidArgumentError:
    # The service's and the database's zone lists can differ by a release of tzdata.
    return InvalidArgumentError("time_zone", f"{query.time_zone!r} is not a time zone the database knows")


async def _record(
    connection: asyncpg.Connection,
    query: AggregateQuery,
    page_size: int,
    rows: int,
    caller_name: str,
) -> None:
    """Write the history entry of a query from its first page; `rows` as fetched, one more than
    the page when another page follows."""
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
        min(rows, page_size),
        caller_name,
        list(selector.series_ids) if selector is not None and selector.series_ids is not None else None,
        json.dumps(selector.labels) if selector is not None else None,
        list(query.group_by),
        query.include_empty_buckets,
    )


def _group_values(group_by_series: tuple[bool, ...], parameters: Iterator[int], catalog: str) -> list[str]:
    """SQL for each group_by entry's value of a series of the `catalog` alias: its id, or the
    grouped label ('' where the series lacks it). The label keys are the next parameter when
    a label is grouped by (see _grouping_arguments)."""
    keys = next(parameters) if not all(group_by_series) else 0
    label = f"coalesce({catalog}.labels ->> (${keys}::text[])[{{}}], '')"
    return [
        f"{catalog}.series_id" if by_series else label.format(index + 1)
        for index, by_series in enumerate(group_by_series)
    ]


def _grouping_arguments(query: AggregateQuery) -> list[object]:
    """The arguments that follow a statement's own over the selected series: the group_by
    entries when a label is grouped by, then the series ids when the selector names them."""
    arguments: list[object] = []
    if any(key != GROUP_BY_SERIES for key in query.group_by):
        arguments.append(list(query.group_by))
    if query.members.series_ids is not None:
        arguments.append(list(query.members.series_ids))
    return arguments


@functools.cache
def _portfolio_sql(
    granularity: Granularity,
    fixed: FixedWidthBuckets | None,
    spans: tuple[tuple[str, str, str], ...] | None,
    group_by_series: tuple[bool, ...],
    by_id: bool,
    continued: bool,
    guarded: bool,
) -> str:
    """One page of the buckets of the selected series, in groups; `guarded` as
    aggregate_sources.summed says.

    Parameters: $1 the label pairs every series must carry, $2 zone, $3/$4 the readings'
    bounds (the lower one where the cursor's bucket starts, when one sequence goes on), $5
    page size; then as needed (see portfolio_statement) the group_by entries, the series ids
    to pick from, and on continued pages the last group's values and bucket start returned;
    then with rollup `spans` (the non-empty ones) the window's cuts they name other than lo and
    hi, in the order of their first mention (see aggregate_sources). Group values and their
    order are those of text compared by code point, on every engine.
    """
    next_parameter = iter(range(6, 20))
    groups = _group_values(group_by_series, next_parameter, "s")
    names = [f"g{index}" for index in range(len(groups))]
    bucket_key, bucket_start = _bucket_key_and_start(granularity, fixed)
    if fixed is not None:
        bucket_end = f"bucket_start + INTERVAL '{fixed.width_seconds} seconds'"
    else:
        bucket_end = _BUCKET_ENDS[granularity]
    pick = f"AND s.series_id = ANY(${next(next_parameter)}::text[])" if by_id else ""
    cursor_filter = ""
    if continued:
        values = next(next_parameter) if names else 0
        start = next(next_parameter)
        cursor_row = [f'(${values}::text[])[{index + 1}] COLLATE "C"' for index in range(len(names))]
        sorted_row = [f'{name} COLLATE "C"' for name in names]
        cursor_filter = (
            f"WHERE ({', '.join([*sorted_row, 'bucket_start'])}) > ({', '.join([*cursor_row, f'${start}'])})"
        )
    bounds = {"lo": "$3", "hi": "$4"}
    for name in _cut_names(spans):
        bounds[name] = f"${next(next_parameter)}"
    group_columns = "".join(
        f"{expression} AS {name}, " for expression, name in zip(groups, names, strict=True)
    )
    carried = "".join(f"{name}, " for name in names)
    positions = "".join(f"{position}, " for position in range(1, len(names) + 1))
    order = "".join(f'{name} COLLATE "C", ' for name in names)
    values_array = f"ARRAY[{', '.join(names)}]::text[]" if names else "'{}'::text[]"
    selection = f"s.labels @> $1::jsonb {pick}"
    source = portfolio_source(
        group_columns,
        selection,
        ("$3", "$4"),
        None if spans is None else tuple((table, bounds[low], bounds[high]) for table, low, high in spans),
    )
    return f"""
        WITH page AS (
            SELECT {carried}bucket_start, total, minimum, maximum, reading_count, series_count
            FROM (
                SELECT {carried}{bucket_start} AS bucket_start, total, minimum, maximum,
                       reading_count, series_count
                FROM (
                    SELECT {carried}{bucket_key} AS bucket_key, {aggregates(guarded)},
                           count(DISTINCT series_id) AS series_count
                    FROM ({source}) AS source
                    GROUP BY {positions}bucket_key
                    OFFSET 0  -- the cursor's filter applies to buckets, not to every row
                ) AS grouped
            ) AS buckets
            {cursor_filter}
            ORDER BY {order}bucket_start
            LIMIT $5::integer + 1
        )
        SELECT extract(epoch FROM bucket_start)::bigint,
               extract(epoch FROM {bucket_end})::bigint,
               to_char(bucket_start AT TIME ZONE $2, '{_PERIOD_PATTERNS[granularity]}'),
               total, minimum, maximum, reading_count, series_count,
               {values_array}
        FROM page
        ORDER BY {order}bucket_start
    """


def _cut_names(spans: tuple[tuple[str, str, str], ...] | None) -> list[str]:
    """The cuts the spans are bounded by, other than lo and hi, each once: the parameters of a
    portfolio statement that follow the cursor's."""
    names = [name for _, low, high in spans or () for name in (low, high) if name not in ("lo", "hi")]
    return list(dict.fromkeys(names))


@functools.cache
def _group_intervals_sql(group_by_series: tuple[bool, ...], by_id: bool, every_group: bool) -> str:
    """Per group of the selected series, how many declare each reading interval; with
    `every_group` also the groups (and series) declaring none, with a NULL interval.

    Parameters: $1 the label pairs, then the group_by entries when a label is grouped by, then
    the series ids when `by_id`.
    """
    next_parameter = iter(range(2, 5))
    groups = _group_values(group_by_series, next_parameter, "s")
    pick = f"AND series_id = ANY(${next(next_parameter)}::text[])" if by_id else ""
    values = f"ARRAY[{', '.join(groups)}]::text[]" if groups else "'{}'::text[]"
    return f"""
        SELECT {values} AS group_values, reading_interval_seconds, count(*) AS series
        FROM series AS s
        WHERE labels @> $1::jsonb {pick} {"" if every_group else "AND reading_interval_seconds IS NOT NULL"}
        GROUP BY 1, 2
    """


def _group_intervals_statement(query: AggregateQuery) -> tuple[str, list[object]]:
    selector = query.members
    arguments: list[object] = [json.dumps(selector.labels), *_grouping_arguments(query)]
    sql = _group_intervals_sql(
        tuple(key == GROUP_BY_SERIES for key in query.group_by),
        selector.series_ids is not None,
        query.include_empty_buckets,
    )
    return sql, arguments


def _selected_span_sql(by_id: bool) -> str:
    """The first and last reading time of all selected series: $1 the label pairs, $2 the ids."""
    pick = "AND series_id = ANY($2::text[])" if by_id else ""
    return (
        f"SELECT min(first_reading_time), max(last_reading_time) FROM series WHERE labels @> $1::jsonb {pick}"
    )


_SELECTED_SPAN = _selected_span_sql(by_id=False)
_SELECTED_SPAN_BY_ID = _selected_span_sql(by_id=True)


def portfolio_statement(
    query: AggregateQuery, page: PageRequest[GroupPosition], guarded: bool = False
) -> tuple[str, list[object]]:
    """The statement that answers one page of a query over selected series, with its arguments."""
    selector = query.members
    time_range = query.time_range
    lo = time_range.lower_bound
    if page.after is not None and not page.after[0]:
        # One sequence: a bucket after the cursor's holds only readings after its start.
        lo = max(lo, page.after[1])
    arguments: list[object] = [
        json.dumps(selector.labels),
        query.time_zone,
        lo,
        time_range.upper_bound,
        page.page_size,
        *_grouping_arguments(query),
    ]
    if page.after is not None:
        group, start = page.after
        arguments += [list(group), start] if group else [start]
    plan = rollup_plan(query.granularity, query.time_zone)
    if plan is not None and plan.check_hours:
        plan = None  # hours that may straddle buckets are not checked across many series
    spans = None
    if plan is not None:
        hi = max(lo, time_range.upper_bound)
        cuts = dict(zip(CUT_NAMES[plan.tier], window_cuts(lo, hi, plan.tier), strict=True))
        cuts.update(lo=lo, hi=hi)
        spans = tuple(span for span in rolled_up_spans(plan.tier) if cuts[span[1]] < cuts[span[2]])
        arguments += [cuts[name] for name in _cut_names(spans)]
    sql = _portfolio_sql(
        query.granularity,
        fixed_width_buckets(query.granularity, query.time_zone),
        spans,
        tuple(key == GROUP_BY_SERIES for key in query.group_by),
        selector.series_ids is not None,
        page.after is not None,
        guarded,
    )
    return sql, arguments


async def query_portfolio(
    database: Database, query: AggregateQuery, page: PageRequest[GroupPosition], caller_name: str
) -> Page[Bucket]:
    """One page of the buckets of the selected series (in groups); a first page is recorded in
    the history in the same transaction. Series named by id must all be in the catalog (one
    primary key probe each, first). One statement joins the catalog with the readings; on
    Citus both are co-located, so every worker aggregates its own series at once. The catalog
    also says what each group declares (coverage) and, for empty buckets, which groups there
    are. A statement whose sum left a double is asked again, guarded (aggregate_sources.summed)."""
    try:
        return await _query_portfolio(database, query, page, caller_name, guarded=False)
    except asyncpg.NumericValueOutOfRangeError:
        return await _query_portfolio(database, query, page, caller_name, guarded=True)


async def _query_portfolio(
    database: Database,
    query: AggregateQuery,
    page: PageRequest[GroupPosition],
    caller_name: str,
    guarded: bool,
) -> Page[Bucket]:
    sql, arguments = portfolio_statement(query, page, guarded)
    intervals_sql, intervals_arguments = _group_intervals_statement(query)
    async with database.query_connection() as connection:
        try:
            with database_span("query page", _QUERY_SPAN_ATTRIBUTES):
                async with connection.transaction():
                    if query.members.series_ids is not None:
                        await check_series_exist(connection, query.members.series_ids, query.series_ids_field)
                    rows = await connection.fetch(sql, *arguments)
                    interval_rows = await connection.fetch(intervals_sql, *intervals_arguments)
                    intervals: dict[tuple[str, ...], list[IntervalCount]] = {}
                    for row in interval_rows:
                        declared = intervals.setdefault(tuple(row["group_values"]), [])
                        if row["reading_interval_seconds"] is not None:
                            declared.append((row["reading_interval_seconds"], row["series"]))
                    if query.include_empty_buckets:
                        window = await _empty_bucket_window(connection, query)
                        buckets = _with_empty_buckets(query, page, rows, intervals, window)
                    else:
                        buckets = _found_buckets(query, rows[: page.page_size + 1], intervals)
                    if page.after is None:
                        await _record(connection, query, page.page_size, len(buckets), caller_name)
        except asyncpg.InvalidParameterValueError as error:
            raise _unknown_zone(query) from error
    return Page(buckets[: page.page_size], has_more=len(buckets) > page.page_size)


def _found_buckets(
    query: AggregateQuery, rows: list[asyncpg.Record], intervals: dict[tuple[str, ...], list[IntervalCount]]
) -> list[Bucket]:
    range_start, range_end = _range_micros(query)
    buckets = []
    for row in rows:
        group = tuple(row[8])
        expected = expected_reading_count(row[0], row[1], range_start, range_end, intervals.get(group, ()))
        buckets.append(_bucket(row, group, expected))
    return buckets


def _bucket(row: asyncpg.Record, group: tuple[str, ...], expected: int) -> Bucket:
    """A bucket from a row of the statement over selected series."""
    total = credible_total(row[3], row[4], row[5])
    return Bucket(row[0], row[1], row[2], total, row[4], row[5], row[6], row[7], group, expected)


async def _empty_bucket_window(connection: asyncpg.Connection, query: AggregateQuery) -> TimeRange | None:
    """The range every bucket of which is returned: the query's, with an unbounded side clipped
    to the selected series' first or last reading; None when that leaves nothing."""
    start, end = query.time_range.start_time, query.time_range.end_time
    if start is None or end is None:
        selector = query.members
        labels = json.dumps(selector.labels)
        if selector.series_ids is None:
            span = await connection.fetchrow(_SELECTED_SPAN, labels)
        else:
            span = await connection.fetchrow(_SELECTED_SPAN_BY_ID, labels, list(selector.series_ids))
        assert span is not None
        if span[0] is None:
            return None
        start = start if start is not None else span[0]
        end = end if end is not None else span[1] + timedelta(microseconds=1)
    return TimeRange(start, end) if start < end else None


def _with_empty_buckets(
    query: AggregateQuery,
    page: PageRequest[GroupPosition],
    rows: list[asyncpg.Record],
    intervals: dict[tuple[str, ...], list[IntervalCount]],
    window: TimeRange | None,
) -> list[Bucket]:
    """Every bucket of the window for every group after the page's cursor, up to one more than
    the page: those with readings from the statement's rows, the others empty.

    The statement returns the first page_size + 1 buckets with readings after the cursor, so
    it holds every bucket with readings among the first page_size + 1 of all.
    """
    if window is None:
        return []
    found = {(tuple(row[8]), row[0]): row for row in rows}
    range_start, range_end = _range_micros(query)
    zone = query.zone
    buckets: list[Bucket] = []
    for group in sorted(intervals):
        first = window.lower_bound
        if page.after is not None:
            after_group, after_start = page.after
            if group < after_group:
                continue
            if group == after_group:
                first = max(first, bucket_containing(after_start, query.granularity, zone).end)
        for span in buckets_between(first, window.upper_bound, query.granularity, zone):
            start_seconds, end_seconds = int(span.start.timestamp()), int(span.end.timestamp())
            expected = expected_reading_count(
                start_seconds, end_seconds, range_start, range_end, intervals[group]
            )
            row = found.get((group, start_seconds))
            if row is None:
                bucket = Bucket(start_seconds, end_seconds, span.period, 0.0, 0.0, 0.0, 0, 0, group, expected)
            else:
                bucket = _bucket(row, group, expected)
            buckets.append(bucket)
            if len(buckets) > page.page_size:
                return buckets
    return buckets


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
