"""A page of an aggregate query, planned as plain data before anything runs, and assembled from
the rows the storage returns for it.

The plan names every bucket the page can hold (domain/bucket_grid.py, from the rule of
domain/bucketing.py), the window of rows it reads, which of them come from rollups, the cursor,
the page size and whether the query is recorded. The storage renders it as SQL and returns
rows keyed by bucket number; a bucket's start, end and label come from the plan alone.

A page may need one fact from the database first (a Probe): for one series over a range
longer than a page, where its first reading after the cursor lies, so that the page's buckets
begin there; for series picked by a selector with an open range that must be clipped (empty
buckets, or buckets too irregular to list over the whole supported range), where their
readings begin and end. Planning again with the answer gives the page's plan.
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from timeseries_aggregation.domain.aggregation import AggregateQuery, Bucket, credible_total
from timeseries_aggregation.domain.batch import unix_micros
from timeseries_aggregation.domain.bucket_grid import (
    MAX_EXPLICIT_BUCKETS,
    BucketGrid,
    ExplicitGrid,
    FixedGrid,
    bucket_count_bound,
    bucket_end,
    fixed_width_buckets,
    grid_for,
    spans_between,
)
from timeseries_aggregation.domain.bucketing import bucket_reach
from timeseries_aggregation.domain.coverage import IntervalCount, expected_reading_count
from timeseries_aggregation.domain.paging import GroupPosition, Page, PageRequest
from timeseries_aggregation.errors import InvalidArgumentError, SeriesNotFoundError
from timeseries_aggregation.granularities import GRANULARITY_INFO

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_ONE_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RollupTable(enum.Enum):
    HOURLY = "hourly_rollups"
    DAILY = "daily_rollups"


@dataclass(frozen=True, slots=True)
class RollupSpan:
    """Rollup rows of a table whose bucket_start lies in [start, end)."""

    table: RollupTable
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class RollupCuts:
    """How a rolled-up series' window is read: readings at the edges, before the first and
    after the last whole hour; rollups in `spans`, except the hours in `cut_hours`, which a
    bucket boundary cuts and whose readings are read instead."""

    edges: tuple[tuple[datetime, datetime], tuple[datetime, datetime]]
    spans: tuple[RollupSpan, ...]
    cut_hours: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class PagePlan:
    """Everything one page's statement does.

    Rows with a time in [window_start, window_end) are put in the buckets of `grid` (which
    holds every one of them) and grouped; `rollups` says how a rolled-up series is read (None:
    from its readings alone). A page of one series returns the first page_size + 1 buckets and
    whether a reading lies in [window_end, beyond_end); a page of selected series returns the
    first page_size + 1 (group, bucket) pairs after `cursor` (group values, bucket number).
    """

    query: AggregateQuery
    page_size: int
    grid: BucketGrid
    window_start: datetime
    window_end: datetime
    rollups: RollupCuts | None
    beyond_end: datetime | None = None
    cursor: tuple[tuple[str, ...], int] | None = None
    records_history: bool = False

    @property
    def fills_empty_buckets(self) -> bool:
        """Whether every bucket of the window is returned for every group, with readings or not."""
        return self.query.include_empty_buckets and self.window_start < self.window_end

    @property
    def buckets_per_group(self) -> int:
        """How many buckets the window holds."""
        return self.grid.number(self.window_end - _ONE_MICROSECOND) - self.grid.number(self.window_start) + 1


@dataclass(frozen=True, slots=True)
class FirstReadingProbe:
    """Ask for the first reading of one series in [start, end), with the catalog's figures."""

    series_id: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class FirstReading:
    """What a FirstReadingProbe found: whether the series is known, its first reading in the
    range (None: none) and the average time between its readings (None: unknown)."""

    known: bool
    time: datetime | None
    spacing: timedelta | None


@dataclass(frozen=True, slots=True)
class SelectedSpanProbe:
    """Ask for the first and last reading times of the selected series, from the catalog."""

    query: AggregateQuery


@dataclass(frozen=True, slots=True)
class SelectedSpan:
    """The first and last reading times of the selected series (None: they have none)."""

    first: datetime | None
    last: datetime | None


def plan_series_page(
    query: AggregateQuery, page: PageRequest[datetime], first_reading: FirstReading | None = None
) -> PagePlan | FirstReadingProbe:
    """The plan of a page of one series, or the probe it needs first."""
    time_range = query.time_range
    start, end = time_range.lower_bound, time_range.upper_bound
    if page.after is not None:
        # Past the cursor's bucket: its readings, already returned, are not read again.
        start = max(start, bucket_end(page.after, query.granularity, query.time_zone))
    start = min(start, end)
    records = page.after is None
    # As far as page size + 2 buckets reach (the cursor's own may come first), then a bucket.
    if end - start <= bucket_reach(query.granularity, page.page_size + 2):
        return _series_plan(query, page.page_size, start, end, None, records)
    if first_reading is None:
        return FirstReadingProbe(query.series_id, start, end)
    if not first_reading.known:
        raise SeriesNotFoundError(query.series_ids_field, [query.series_id])
    if first_reading.time is None:
        return _series_plan(query, page.page_size, start, start, None, records)
    first = first_reading.time
    window_end = _page_reach(query, first, end, page.page_size, first_reading.spacing)
    beyond = end if window_end < end else None
    return _series_plan(query, page.page_size, first, window_end, beyond, records)


def _page_reach(
    query: AggregateQuery, first: datetime, end: datetime, page_size: int, spacing: timedelta | None
) -> datetime:
    """Where a page starting at `first` stops reading: the end of its page_size + 1-th bucket or
    as far as that many readings reach at the series' average spacing (for sparse series),
    always at a bucket's end, never past `end`; for listed buckets, at most a statement's
    worth of them."""
    granularity, time_zone = query.granularity, query.time_zone
    wanted = page_size + 1
    fixed = fixed_width_buckets(granularity, time_zone)
    sparse_reach = first + spacing * (page_size + 2) if spacing is not None else first
    if fixed is not None:
        grid = grid_for(granularity, time_zone, first, end)
        assert isinstance(grid, FixedGrid)
        first_number = grid.number(first)
        last_number = max(first_number + wanted - 1, grid.number(min(sparse_reach, end) - _ONE_MICROSECOND))
        reach = _EPOCH + timedelta(seconds=grid.start_seconds(last_number + 1))
        return min(reach, end)
    reach = first
    for counted, span in enumerate(spans_between(granularity, time_zone, first, end), start=1):
        reach = span.end
        if (counted >= wanted and span.end >= sparse_reach) or counted >= MAX_EXPLICIT_BUCKETS:
            break
    return min(reach, end)


def _series_plan(
    query: AggregateQuery,
    page_size: int,
    start: datetime,
    end: datetime,
    beyond_end: datetime | None,
    records_history: bool,
) -> PagePlan:
    grid = grid_for(query.granularity, query.time_zone, start, max(end, start + _ONE_MICROSECOND))
    return PagePlan(
        query=query,
        page_size=page_size,
        grid=grid,
        window_start=start,
        window_end=end,
        rollups=rollup_cuts(query, grid, start, end, across_series=False),
        beyond_end=beyond_end,
        records_history=records_history,
    )


def plan_portfolio_page(
    query: AggregateQuery, page: PageRequest[GroupPosition], selected_span: SelectedSpan | None = None
) -> PagePlan | SelectedSpanProbe:
    """The plan of a page of selected series (in groups, with empty buckets maybe), or the
    probe it needs first."""
    time_range = query.time_range
    start, end = time_range.lower_bound, time_range.upper_bound
    open_side = time_range.start_time is None or time_range.end_time is None
    listed = fixed_width_buckets(query.granularity, query.time_zone) is None
    # Listed buckets of an open range would reach over the whole supported range (47,000 days):
    # they are listed from where the selected series' readings begin to where they end.
    if ((query.include_empty_buckets or listed) and open_side) or (listed and _too_many(query, start, end)):
        if selected_span is None:
            return SelectedSpanProbe(query)
        first, last = selected_span.first, selected_span.last
        if first is None or last is None:
            start = end  # nothing to read, no bucket to return
        elif query.include_empty_buckets:
            # Every bucket of the range, an open side of it clipped to the readings.
            start = time_range.start_time or first
            end = time_range.end_time or last + _ONE_MICROSECOND
        else:
            start, end = max(start, first), min(end, last + _ONE_MICROSECOND)
        if listed and _too_many(query, start, end):
            raise InvalidArgumentError(
                "start_time",
                f"the selected series' readings span more than {MAX_EXPLICIT_BUCKETS:,} "
                f"{GRANULARITY_INFO[query.granularity].name} buckets in {query.time_zone}; "
                "set start_time and end_time to a shorter range",
            )
    if page.after is not None and not page.after[0]:
        # One sequence: a bucket after the cursor's holds only readings after its start.
        start = max(start, page.after[1])
    start = min(start, end)
    grid = grid_for(query.granularity, query.time_zone, start, max(end, start + _ONE_MICROSECOND))
    cursor = None
    if page.after is not None:
        group, after_start = page.after
        cursor = (group, grid.number(after_start))
    return PagePlan(
        query=query,
        page_size=page.page_size,
        grid=grid,
        window_start=start,
        window_end=end,
        rollups=rollup_cuts(query, grid, start, end, across_series=True),
        cursor=cursor,
        records_history=page.after is None,
    )


def _too_many(query: AggregateQuery, start: datetime, end: datetime) -> bool:
    """Whether [start, end) may hold more buckets than a statement is given."""
    return bucket_count_bound(query.granularity, query.time_zone, start, end) > MAX_EXPLICIT_BUCKETS


def rollup_cuts(
    query: AggregateQuery, grid: BucketGrid, start: datetime, end: datetime, across_series: bool
) -> RollupCuts | None:
    """How a rolled-up series' rows of [start, end) are read, or None (from readings only).

    A rollup row serves where its hour (day) lies in one bucket, that is where no bucket
    boundary falls strictly inside it. Daily rollups serve where no boundary falls inside any
    day of the window (buckets of whole UTC days). Hourly rollups serve every whole hour; the
    few hours a boundary cuts (days in a zone at +05:30, the hour of a clock change at 00:01)
    are read from their readings, unless they are most of them (hours at +05:30) or the page
    is over many series, where reading an hour's readings is not one index probe.
    """
    if GRANULARITY_INFO[query.granularity].longest < _HOUR:
        return None
    h1 = min(_ceil(start, _HOUR), end)
    h2 = max(_floor(end, _HOUR), h1)
    if h1 == h2:
        return None
    whole_hours = (h2 - h1) // _HOUR
    d1 = min(_ceil(h1, _DAY), h2)
    d2 = max(_floor(h2, _DAY), d1)
    if isinstance(grid, FixedGrid):
        # One width and phase: every boundary is on a whole hour (day), or none is.
        width, origin = grid.width_seconds, grid.origin_unix_seconds
        if width % 3_600 or origin % 3_600:
            if across_series or 2 * ((h2 - h1).total_seconds() // width) > whole_hours:
                return None
            cut_hours = [_floor(boundary, _HOUR) for boundary in _boundaries_inside(grid, h1, h2)]
        else:
            cut_hours = []
        whole_days = width % 86_400 == 0 and origin % 86_400 == 0
    else:
        boundaries = _boundaries_inside(grid, h1, h2)
        cut_hours = sorted({_floor(b, _HOUR) for b in boundaries if b != _floor(b, _HOUR)})
        whole_days = all(b == _floor(b, _DAY) for b in boundaries if d1 < b < d2)
    if cut_hours and (across_series or 2 * len(cut_hours) > whole_hours):
        return None
    spans: tuple[RollupSpan, ...] = (RollupSpan(RollupTable.HOURLY, h1, h2),)
    if not GRANULARITY_INFO[query.granularity].clock and d1 < d2 and whole_days:
        spans = tuple(
            span
            for span in (
                RollupSpan(RollupTable.HOURLY, h1, d1),
                RollupSpan(RollupTable.DAILY, d1, d2),
                RollupSpan(RollupTable.HOURLY, d2, h2),
            )
            if span.start < span.end
        )
    return RollupCuts(((start, h1), (h2, end)), spans, tuple(cut_hours))


def _boundaries_inside(grid: BucketGrid, start: datetime, end: datetime) -> list[datetime]:
    """The grid's bucket boundaries strictly inside (start, end)."""
    if isinstance(grid, ExplicitGrid):
        return [span.start for span in grid.spans if start < span.start < end]
    first = grid.number(start) + 1
    last = grid.number(end - _ONE_MICROSECOND)
    return [_EPOCH + timedelta(seconds=grid.start_seconds(number)) for number in range(first, last + 1)]


def _floor(instant: datetime, unit: timedelta) -> datetime:
    return _EPOCH + (instant - _EPOCH) // unit * unit


def _ceil(instant: datetime, unit: timedelta) -> datetime:
    floor = _floor(instant, unit)
    return floor if floor == instant else floor + unit


# The rows a storage returns for a page: per bucket, its number, the group's values (empty for
# one series), total, minimum, maximum, reading count and series count.
BucketRow = tuple[int, tuple[str, ...], float | None, float, float, int, int]


@dataclass(frozen=True, slots=True)
class PageRows:
    """What the storage found for a page: bucket rows in (group, number) order; the reading
    intervals the series declare, per group; whether a reading lies past a one-series
    page's window."""

    buckets: Sequence[BucketRow]
    intervals: dict[tuple[str, ...], list[IntervalCount]]
    readings_beyond: bool = False


def assemble_page(plan: PagePlan, rows: PageRows) -> Page[Bucket]:
    """The page's buckets, labelled by the plan's grid, with the coverage the series declare."""
    range_start, range_end = (
        unix_micros(plan.query.time_range.lower_bound),
        unix_micros(plan.query.time_range.upper_bound),
    )
    if plan.fills_empty_buckets:
        buckets = _with_empty_buckets(plan, rows, range_start, range_end)
    else:
        found = rows.buckets[: plan.page_size + 1]
        spans = plan.grid.spans_of([row[0] for row in found])
        buckets = [
            _bucket(span, row, rows.intervals.get(row[1], ()), range_start, range_end)
            for span, row in zip(spans, found, strict=True)
        ]
    has_more = len(buckets) > plan.page_size or rows.readings_beyond
    return Page(buckets[: plan.page_size], has_more=has_more)


def _bucket(
    span: tuple[int, int, str],
    row: BucketRow,
    intervals: Sequence[IntervalCount],
    range_start: int,
    range_end: int,
) -> Bucket:
    _, group, total, minimum, maximum, count, series_count = row
    start, end, period = span
    expected = expected_reading_count(start, end, range_start, range_end, intervals) if intervals else 0
    return Bucket(
        start,
        end,
        period,
        credible_total(total, minimum, maximum),
        minimum,
        maximum,
        count,
        series_count,
        group,
        expected,
    )


def _with_empty_buckets(plan: PagePlan, rows: PageRows, range_start: int, range_end: int) -> list[Bucket]:
    """Every bucket of the window for every group after the page's cursor, up to one more than
    the page: those with readings from the rows, the others empty.

    The statement returns the first page_size + 1 buckets with readings after the cursor, so
    it holds every bucket with readings among the first page_size + 1 of all.
    """
    grid = plan.grid
    first_number = grid.number(plan.window_start)
    last_number = first_number + plan.buckets_per_group - 1
    found = {(row[1], row[0]): row for row in rows.buckets}
    buckets: list[Bucket] = []
    for group in sorted(rows.intervals):
        first = first_number
        if plan.cursor is not None:
            after_group, after_number = plan.cursor
            if group < after_group:
                continue
            if group == after_group:
                first = max(first, after_number + 1)
        for number in range(first, last_number + 1):
            row = found.get((group, number), (number, group, 0.0, 0.0, 0.0, 0, 0))
            buckets.append(_bucket(grid.span(number), row, rows.intervals[group], range_start, range_end))
            if len(buckets) > plan.page_size:
                return buckets
    return buckets
