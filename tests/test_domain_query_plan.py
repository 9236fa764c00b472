"""A page's plan: its buckets, the rows it reads from rollups, its probes and its assembly."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from timeseries_aggregation.domain.aggregation import AggregateQuery, TimeRange
from timeseries_aggregation.domain.bucket_grid import ExplicitGrid, FixedGrid, grid_for, zone_history
from timeseries_aggregation.domain.bucketing import buckets_between
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.domain.query_plan import (
    FirstReading,
    FirstReadingProbe,
    PagePlan,
    PageRows,
    RollupTable,
    SelectedSpan,
    SelectedSpanProbe,
    assemble_page,
    plan_portfolio_page,
    plan_series_page,
)
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import Granularity

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


def year_query(zone: str, granularity: Granularity, year: int = 2025) -> AggregateQuery:
    start = datetime(year, 1, 1, tzinfo=UTC)
    return AggregateQuery("m1", granularity, TimeRange(start, start.replace(year=year + 1)), zone)


def series_plan(query: AggregateQuery, page_size: int = 10_000) -> PagePlan:
    page: PageRequest[datetime] = PageRequest(page_size, None)
    plan = plan_series_page(query, page)
    if isinstance(plan, FirstReadingProbe):  # readings from the range's start, every minute
        plan = plan_series_page(query, page, FirstReading(True, plan.start, timedelta(minutes=1)))
    assert isinstance(plan, PagePlan)
    return plan


def tables(plan: PagePlan) -> str:
    """What a rolled-up series' year is read from: days, hours, hours with cut ones, readings."""
    if plan.rollups is None:
        return "readings"
    read = {span.table for span in plan.rollups.spans}
    if RollupTable.DAILY in read:
        return "days"
    return "cut hours" if plan.rollups.cut_hours else "hours"


@pytest.mark.parametrize(
    ("zone", "granularity", "year", "read"),
    [
        # Buckets of whole UTC days: days, and everything made of them, from daily rollups.
        ("UTC", Granularity.DAY_OF_MONTH, 2025, "days"),
        ("UTC", Granularity.MONTHLY, 2025, "days"),
        ("Atlantic/Reykjavik", Granularity.MONTHLY, 2025, "days"),
        ("UTC", Granularity.HOURLY, 2025, "hours"),
        # Boundaries on whole UTC hours: hours fit in every bucket.
        ("Europe/Berlin", Granularity.DAY_OF_MONTH, 2025, "hours"),
        ("America/New_York", Granularity.YEARLY, 2025, "hours"),
        ("Etc/GMT-5", Granularity.WEEKLY, 2025, "hours"),
        # A day at +05:30 cuts one hour, read from its readings; an hour at +05:30 is all cut.
        ("Asia/Kolkata", Granularity.DAY_OF_MONTH, 2025, "cut hours"),
        ("Asia/Kolkata", Granularity.HOURLY, 2025, "readings"),
        # Moncton changed its clocks at 00:01 until 2006: going back, a day recurs from 00:01
        # (see below), but no month begins on such a night.
        ("America/Moncton", Granularity.DAY_OF_MONTH, 2005, "cut hours"),
        ("America/Moncton", Granularity.MONTHLY, 2005, "hours"),
        ("America/Moncton", Granularity.DAY_OF_MONTH, 2025, "hours"),
        # Lord Howe's hours at +10:30 (half the year) are cut, its hours at +11 are not.
        ("Australia/Lord_Howe", Granularity.HOURLY, 2025, "cut hours"),
        # Buckets shorter than an hour: readings.
        ("UTC", Granularity.QUARTER_HOURLY, 2025, "readings"),
        ("Europe/Berlin", Granularity.HALF_HOURLY, 2025, "readings"),
    ],
)
def test_the_rollups_a_page_reads_follow_its_bucket_boundaries(
    zone: str, granularity: Granularity, year: int, read: str
) -> None:
    assert tables(series_plan(year_query(zone, granularity, year))) == read


def test_the_hours_a_boundary_cuts_are_the_ones_read_from_readings() -> None:
    plan = series_plan(year_query("America/Moncton", Granularity.DAY_OF_MONTH, 2005))
    assert plan.rollups is not None
    # On October 30th the clocks went back from 00:01 to 23:01 of the 29th, at 03:01 UTC: the
    # 29th comes back for an hour less a minute, and the hour from 03:00 UTC is cut. In April
    # they went on from 00:01 to 01:01 within one day, and no hour is cut.
    assert plan.rollups.cut_hours == (datetime(2005, 10, 30, 3, tzinfo=UTC),)


def test_the_grid_is_the_rule_where_buckets_vary() -> None:
    zone = "Australia/Lord_Howe"
    plan = series_plan(year_query(zone, Granularity.HOURLY))
    assert isinstance(plan.grid, ExplicitGrid)
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    assert list(plan.grid.spans) == list(buckets_between(start, end, Granularity.HOURLY, ZoneInfo(zone)))
    # No two buckets overlap, and none is left out.
    assert all(a.end == b.start for a, b in zip(plan.grid.spans, plan.grid.spans[1:], strict=False))


def test_hours_of_a_whole_hour_zone_are_one_width() -> None:
    plan = series_plan(year_query("Europe/Berlin", Granularity.HOURLY))
    assert isinstance(plan.grid, FixedGrid)
    number = plan.grid.number(datetime(2025, 10, 26, 1, 30, tzinfo=UTC))
    # The second 02:00 hour of the night the clocks go back.
    assert plan.grid.span(number) == (
        int(datetime(2025, 10, 26, 1, tzinfo=UTC).timestamp()),
        int(datetime(2025, 10, 26, 2, tzinfo=UTC).timestamp()),
        "2025-10-26T02:00",
    )


def test_a_range_longer_than_a_page_asks_for_its_first_reading_first() -> None:
    query = AggregateQuery("m1", Granularity.DAY_OF_MONTH, TimeRange(None, None), "Europe/Berlin")
    probe = plan_series_page(query, PageRequest(10, None))
    assert isinstance(probe, FirstReadingProbe)
    first = datetime(2025, 3, 29, 12, tzinfo=UTC)
    plan = plan_series_page(query, PageRequest(10, None), FirstReading(True, first, timedelta(hours=1)))
    assert isinstance(plan, PagePlan)
    # From the reading on, eleven days (a page and one to tell whether more follow), the last
    # ending at a local midnight; readings past it only say that more pages follow.
    assert plan.window_start == first
    assert plan.window_end == datetime(2025, 4, 8, 22, tzinfo=UTC)
    assert plan.beyond_end == query.time_range.upper_bound


def test_a_sparse_series_page_reaches_as_far_as_its_readings_are_apart() -> None:
    query = AggregateQuery("m1", Granularity.HOURLY, TimeRange(None, None), "UTC")
    first = datetime(2025, 1, 1, tzinfo=UTC)
    plan = plan_series_page(query, PageRequest(10, None), FirstReading(True, first, timedelta(days=1)))
    assert isinstance(plan, PagePlan)
    assert plan.window_end == first + timedelta(days=12)


def test_empty_buckets_of_an_open_range_are_clipped_to_the_selected_readings() -> None:
    selector = SeriesSelector(series_ids=None, labels={"site": "a"})
    query = AggregateQuery(
        "",
        Granularity.DAY_OF_MONTH,
        TimeRange(None, None),
        "UTC",
        selector=selector,
        include_empty_buckets=True,
    )
    page: PageRequest[tuple[tuple[str, ...], datetime]] = PageRequest(100, None)
    probe = plan_portfolio_page(query, page)
    assert isinstance(probe, SelectedSpanProbe)
    first, last = datetime(2025, 1, 1, 12, tzinfo=UTC), datetime(2025, 1, 3, 1, tzinfo=UTC)
    plan = plan_portfolio_page(query, page, SelectedSpan(first, last))
    assert isinstance(plan, PagePlan)
    rows = PageRows([(plan.grid.number(first), (), 2.0, 1.0, 1.0, 2, 1)], {(): []})
    buckets = assemble_page(plan, rows).items
    assert [(bucket.period, bucket.reading_count) for bucket in buckets] == [
        ("2025-01-01", 2),
        ("2025-01-02", 0),
        ("2025-01-03", 0),
    ]
    assert plan.buckets_per_group == 3


def test_a_zones_changes_are_found_to_the_second() -> None:
    history = zone_history("Europe/Berlin")
    assert history.offsets == frozenset({3600, 7200})
    # Summer time of 2025: from 01:00 UTC on March 30 to 01:00 UTC on October 26.
    assert int(datetime(2025, 3, 30, 1, tzinfo=UTC).timestamp()) in history.changes
    assert int(datetime(2025, 10, 26, 1, tzinfo=UTC).timestamp()) in history.changes
    # Moncton changed at 00:01 local time until 2006.
    assert (
        int(datetime(2006, 10, 29, 3, 1, tzinfo=UTC).timestamp()) in zone_history("America/Moncton").changes
    )


@pytest.mark.parametrize(
    ("zone", "granularity"),
    [
        ("Europe/Berlin", Granularity.HOURLY),
        ("Asia/Kolkata", Granularity.QUARTER_HOURLY),
        ("Asia/Kolkata", Granularity.DAY_OF_MONTH),
        ("America/New_York", Granularity.HALF_HOURLY),
        ("Etc/GMT+5", Granularity.WEEKLY),
    ],
)
def test_many_buckets_of_one_width_are_labelled_as_each_is(zone: str, granularity: Granularity) -> None:
    start = datetime(2025, 3, 29, tzinfo=UTC)
    grid = grid_for(granularity, zone, start, start + timedelta(days=240))
    assert isinstance(grid, FixedGrid)
    # Both clock changes of 2025 lie in these buckets.
    numbers = list(range(grid.number(start), grid.number(start + timedelta(days=240))))
    assert grid.spans_of(numbers) == [grid.span(number) for number in numbers]


def test_listed_buckets_beyond_a_statements_worth_are_refused_naming_the_range() -> None:
    selector = SeriesSelector(series_ids=None, labels={"site": "a"})
    query = AggregateQuery(
        "", Granularity.HOURLY, TimeRange(None, None), "Pacific/Chatham", selector=selector
    )
    page: PageRequest[tuple[tuple[str, ...], datetime]] = PageRequest(100, None)
    assert isinstance(plan_portfolio_page(query, page), SelectedSpanProbe)
    # Chatham's hours are listed (its clocks change at 02:45): ten years of them are too many.
    readings = SelectedSpan(datetime(2015, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidArgumentError) as raised:
        plan_portfolio_page(query, page, readings)
    assert raised.value.field == "start_time"
    # A year of them is planned.
    plan = plan_portfolio_page(query, page, SelectedSpan(readings.first, datetime(2016, 1, 1, tzinfo=UTC)))
    assert isinstance(plan, PagePlan)
    assert isinstance(plan.grid, ExplicitGrid)
