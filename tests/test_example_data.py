"""The old REST demo's answers on its own example data, through the gRPC API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support import EXAMPLE_XLSX, ingest, query_all_pages, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.readers import read_rows

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

SERIES = "example-meter"


def example_requests() -> list[pb.IngestReadingsRequest]:
    readings = [
        pb.Reading(series_id=SERIES, time=ts(row.time), quantity_kwh=row.quantity_kwh)
        for row in read_rows(EXAMPLE_XLSX)
    ]
    return [pb.IngestReadingsRequest(readings=readings[i : i + 1000]) for i in range(0, len(readings), 1000)]


@pytest.fixture
async def loaded(stub: TimeseriesAggregationServiceAsyncStub) -> TimeseriesAggregationServiceAsyncStub:
    response = await ingest(stub, example_requests())
    assert response.readings_received == 8760
    assert response.series_count == 1
    assert response.messages_received == 9
    return stub


def days_query(granularity: pb.Granularity, first: str, last_exclusive: str) -> pb.QueryAggregatesRequest:
    """A query of SERIES from the start of day `first` to the start of day `last_exclusive`."""
    return pb.QueryAggregatesRequest(
        series_id=SERIES, granularity=granularity, start_time=ts(first), end_time=ts(last_exclusive)
    )


async def test_monthly_october_first_to_23rd(loaded: TimeseriesAggregationServiceAsyncStub) -> None:
    response = await loaded.QueryAggregates(days_query(pb.GRANULARITY_MONTHLY, "2025-10-01", "2025-10-24"))
    assert [(b.period, b.total_quantity_kwh, b.reading_count) for b in response.buckets] == [
        ("2025-10", 4_968_000.0, 552)
    ]
    assert response.next_page_token == ""


async def test_daily_single_day(loaded: TimeseriesAggregationServiceAsyncStub) -> None:
    response = await loaded.QueryAggregates(
        days_query(pb.GRANULARITY_DAY_OF_MONTH, "2025-10-01", "2025-10-02")
    )
    [bucket] = response.buckets
    assert bucket.period == "2025-10-01"
    assert bucket.total_quantity_kwh == 216_000.0
    assert bucket.start_time == ts("2025-10-01")
    assert bucket.end_time == ts("2025-10-02")
    assert (bucket.min_quantity_kwh, bucket.max_quantity_kwh, bucket.mean_quantity_kwh) == (9000, 9000, 9000)


async def test_daily_four_days(loaded: TimeseriesAggregationServiceAsyncStub) -> None:
    response = await loaded.QueryAggregates(
        days_query(pb.GRANULARITY_DAY_OF_MONTH, "2025-10-01", "2025-10-05")
    )
    assert [(b.period, b.total_quantity_kwh) for b in response.buckets] == [
        ("2025-10-01", 216_000.0),
        ("2025-10-02", 216_000.0),
        ("2025-10-03", 216_000.0),
        ("2025-10-04", 216_000.0),
    ]


async def test_whole_year_unbounded(loaded: TimeseriesAggregationServiceAsyncStub) -> None:
    monthly = await query_all_pages(
        loaded, pb.QueryAggregatesRequest(series_id=SERIES, granularity=pb.GRANULARITY_MONTHLY)
    )
    assert [b.period for b in monthly] == [f"2025-{month:02d}" for month in range(1, 13)]
    assert sum(b.total_quantity_kwh for b in monthly) == 8760 * 9000
    hourly = await query_all_pages(
        loaded,
        pb.QueryAggregatesRequest(series_id=SERIES, granularity=pb.GRANULARITY_HOURLY, page_size=5000),
    )
    assert len(hourly) == 8760
    assert hourly[0].period == "2025-01-01T00:00"
    assert hourly[-1].period == "2025-12-31T23:00"


async def test_daily_in_berlin_has_dst_days_of_23_and_25_hours(
    loaded: TimeseriesAggregationServiceAsyncStub,
) -> None:
    response = await loaded.QueryAggregates(
        pb.QueryAggregatesRequest(
            series_id=SERIES,
            granularity=pb.GRANULARITY_DAY_OF_MONTH,
            time_zone="Europe/Berlin",
            page_size=400,
        )
    )
    by_period = {b.period: b for b in response.buckets}
    assert by_period["2025-03-30"].reading_count == 23
    assert by_period["2025-10-26"].reading_count == 25
    assert by_period["2025-06-15"].reading_count == 24
    assert by_period["2025-03-30"].start_time == ts("2025-03-29T23:00:00")
    assert by_period["2025-03-30"].end_time == ts("2025-03-30T22:00:00")
    # The first local day starts at 01:00 UTC on 2025-01-01 and holds 23 readings of that year.
    assert response.buckets[0].period == "2025-01-01"
    assert response.buckets[0].reading_count == 23
    assert sum(b.reading_count for b in response.buckets) == 8760
