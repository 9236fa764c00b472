"""Coverage: how many readings a bucket expects from its series' declared reading intervals,
counted on the real time line (daylight-saving days included) and within the query's range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from tests.support import ingest, query_all_pages, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.coverage import slots

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

QUARTER_HOUR = 900


async def declare(stub: Stub, series_id: str, interval_seconds: int | None, **labels: str) -> None:
    series = pb.Series(series_id=series_id, labels=labels)
    if interval_seconds is not None:
        series.reading_interval.CopyFrom(Duration(seconds=interval_seconds))
    await stub.UpdateSeries(
        pb.UpdateSeriesRequest(series=series, update_mask=FieldMask(paths=["labels", "reading_interval"]))
    )


async def quarter_hours(stub: Stub, series_id: str, start: datetime, end: datetime, skip: int = 0) -> None:
    """A reading every 15 minutes in [start, end), leaving out the last `skip`."""
    count = (end - start) // timedelta(minutes=15) - skip
    readings = [
        pb.Reading(series_id=series_id, time=ts(start + i * timedelta(minutes=15)), quantity_kwh=1.0)
        for i in range(count)
    ]
    await ingest(stub, [pb.IngestReadingsRequest(readings=readings)])


def daily(**fields: object) -> pb.QueryAggregatesRequest:
    return pb.QueryAggregatesRequest(
        granularity=pb.GRANULARITY_DAY_OF_MONTH,
        time_zone="Europe/Berlin",
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("first_midnight", "last_midnight", "changed_day"),
    [
        # 29 and 30 March 2025 in Berlin: the clocks go forward on the 30th.
        (datetime(2025, 3, 28, 23, tzinfo=UTC), datetime(2025, 3, 30, 22, tzinfo=UTC), 92),
        # 25 and 26 October 2025: the clocks go back on the 26th.
        (datetime(2025, 10, 24, 22, tzinfo=UTC), datetime(2025, 10, 26, 23, tzinfo=UTC), 100),
    ],
)
async def test_berlin_days_of_the_clock_changes_expect_92_and_100_quarter_hours(
    stub: Stub, first_midnight: datetime, last_midnight: datetime, changed_day: int
) -> None:
    await declare(stub, "meter", QUARTER_HOUR)
    await quarter_hours(stub, "meter", first_midnight, last_midnight, skip=3)
    request = daily(series_id="meter", start_time=ts(first_midnight), end_time=ts(last_midnight))
    buckets = await query_all_pages(stub, request)
    assert [(b.reading_count, b.expected_reading_count) for b in buckets] == [
        (96, 96),
        (changed_day - 3, changed_day),
    ]


async def test_a_bucket_cut_by_the_range_expects_only_its_part(stub: Stub) -> None:
    await declare(stub, "meter", 3_600)
    start = datetime(2025, 1, 1, 6, tzinfo=UTC)  # 07:00 in Berlin
    await quarter_hours(stub, "meter", start, start + timedelta(hours=2))
    [bucket] = await query_all_pages(
        stub,
        daily(series_id="meter", start_time=ts(start), end_time=ts(start + timedelta(hours=5, minutes=30))),
    )
    # Hourly slots at 06:00 .. 11:00 UTC inside [06:00, 11:30): six.
    assert (bucket.reading_count, bucket.expected_reading_count) == (8, 6)


async def test_a_group_sums_what_its_declaring_series_expect(stub: Stub) -> None:
    await declare(stub, "q1", QUARTER_HOUR, site="s")
    await declare(stub, "h1", 3_600, site="s")
    await declare(stub, "undeclared", None, site="s")
    day = datetime(2025, 1, 14, 23, tzinfo=UTC)
    for series_id in ("q1", "h1", "undeclared"):
        await quarter_hours(stub, series_id, day, day + timedelta(days=1))
    [bucket] = await query_all_pages(
        stub,
        daily(
            selector=pb.SeriesSelector(labels={"site": "s"}),
            start_time=ts(day),
            end_time=ts(day + timedelta(days=1)),
        ),
    )
    assert (bucket.reading_count, bucket.expected_reading_count, bucket.series_count) == (3 * 96, 96 + 24, 3)
    grouped = await query_all_pages(
        stub,
        daily(
            selector=pb.SeriesSelector(labels={"site": "s"}),
            group_by=["series_id"],
            start_time=ts(day),
            end_time=ts(day + timedelta(days=1)),
        ),
    )
    assert {b.group["series_id"]: b.expected_reading_count for b in grouped} == {
        "h1": 24,
        "q1": 96,
        "undeclared": 0,
    }


async def test_without_a_declared_interval_nothing_is_expected(stub: Stub) -> None:
    day = datetime(2025, 1, 14, 23, tzinfo=UTC)
    await quarter_hours(stub, "plain", day, day + timedelta(hours=1))
    [bucket] = await query_all_pages(stub, daily(series_id="plain"))
    assert bucket.expected_reading_count == 0


def test_slots_count_multiples_of_the_interval_in_a_half_open_range() -> None:
    hour = 3_600 * 1_000_000
    assert slots(0, hour, 900) == 4
    assert slots(1, hour + 1, 900) == 4  # 900 s .. 3600 s
    assert slots(hour, hour, 900) == 0
    assert slots(hour - 1, hour, 3_600) == 0
    assert slots(hour, hour + 1, 3_600) == 1


async def test_empty_buckets_show_a_missing_day_with_what_it_expected(stub: Stub) -> None:
    await declare(stub, "meter", QUARTER_HOUR, site="s")
    first = datetime(2025, 3, 27, 23, tzinfo=UTC)  # 28 March in Berlin
    await quarter_hours(stub, "meter", first, first + timedelta(days=1))
    # 29 March has no reading; 30 March (23 hours) has four.
    await quarter_hours(
        stub, "meter", datetime(2025, 3, 29, 23, tzinfo=UTC), datetime(2025, 3, 30, tzinfo=UTC)
    )
    request = daily(
        series_id="meter",
        start_time=ts(first),
        end_time=ts(datetime(2025, 3, 30, 22, tzinfo=UTC)),
        include_empty_buckets=True,
    )
    buckets = await query_all_pages(stub, request)
    assert [(b.period, b.reading_count, b.expected_reading_count, b.series_count) for b in buckets] == [
        ("2025-03-28", 96, 96, 1),
        ("2025-03-29", 0, 96, 0),
        ("2025-03-30", 4, 92, 1),
    ]
    empty = buckets[1]
    assert (
        empty.total_quantity_kwh,
        empty.min_quantity_kwh,
        empty.max_quantity_kwh,
        empty.mean_quantity_kwh,
    ) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert (empty.start_time, empty.end_time) == (ts("2025-03-28T23:00:00"), ts("2025-03-29T23:00:00"))
    # Page by page, the same buckets.
    request.page_size = 1
    assert await query_all_pages(stub, request) == buckets


async def test_an_unbounded_range_with_empty_buckets_runs_from_the_first_to_the_last_reading(
    stub: Stub,
) -> None:
    await declare(stub, "a", 3_600, site="s")
    await declare(stub, "b", None, site="s")
    await declare(stub, "silent", 3_600, site="s")  # no reading at all
    await quarter_hours(stub, "a", datetime(2025, 1, 1, 23, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    await quarter_hours(stub, "b", datetime(2025, 1, 4, 12, tzinfo=UTC), datetime(2025, 1, 4, 13, tzinfo=UTC))
    request = daily(
        selector=pb.SeriesSelector(labels={"site": "s"}), group_by=["series_id"], include_empty_buckets=True
    )
    buckets = await query_all_pages(stub, request)
    # Every group, every Berlin day from the first reading (2 January, 00:00 local) to the last
    # (4 January); the range itself is unbounded, so each day expects all of its slots.
    found = [(b.group["series_id"], b.period, b.reading_count, b.expected_reading_count) for b in buckets]
    assert found == [
        ("a", "2025-01-02", 4, 24),
        ("a", "2025-01-03", 0, 24),
        ("a", "2025-01-04", 0, 24),
        ("b", "2025-01-02", 0, 0),
        ("b", "2025-01-03", 0, 0),
        ("b", "2025-01-04", 4, 0),
        ("silent", "2025-01-02", 0, 24),
        ("silent", "2025-01-03", 0, 24),
        ("silent", "2025-01-04", 0, 24),
    ]
    for page_size in (1, 2, 4):
        request.page_size = page_size
        assert await query_all_pages(stub, request) == buckets
    # Nothing selected, nothing returned.
    nobody = daily(selector=pb.SeriesSelector(labels={"site": "none"}), include_empty_buckets=True)
    assert await query_all_pages(stub, nobody) == []
