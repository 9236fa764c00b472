"""Property: for random readings, zones and page sizes, the service's buckets are the ones the
domain's bucketing rule puts the readings in, one reading at a time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import SAMPLE_ZONES, BucketRow, bucket_rows, first_instants, ingest, query_all_pages, ts
from tests.zone_reference import ACCEPTED_ZONES
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.bucketing import BucketSpan, bucket_containing
from timeseries_aggregation.domain.readings import EARLIEST_TIME
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.transport.convert import GRANULARITY_TO_PROTO

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub


def expected_buckets(
    latest: dict[datetime, float], granularity: Granularity, zone: ZoneInfo
) -> list[BucketRow]:
    """What QueryAggregates should return: the readings grouped by the rule's bucket."""
    grouped: dict[BucketSpan, list[float]] = defaultdict(list)
    for instant, quantity in latest.items():
        grouped[bucket_containing(instant, granularity, zone)].append(quantity)
    return [
        (ts(span.start), ts(span.end), span.period, sum(values), min(values), max(values), len(values))
        for span, values in sorted(grouped.items(), key=lambda item: item[0].start)
    ]


async def ingest_and_query(
    stub: TimeseriesAggregationServiceAsyncStub,
    readings: list[tuple[datetime, float]],
    granularity: Granularity,
    zone_name: str,
    page_size: int,
) -> list[pb.Bucket]:
    series_id = f"property-{uuid.uuid4()}"
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[pb.Reading(series_id=series_id, time=ts(t), quantity_kwh=q) for t, q in readings]
            )
        ],
    )
    return await query_all_pages(
        stub,
        pb.QueryAggregatesRequest(
            series_id=series_id,
            granularity=GRANULARITY_TO_PROTO[granularity],
            time_zone=zone_name,
            page_size=page_size,
        ),
    )


readings_strategy = st.lists(
    st.tuples(
        # Minutes after the first instant: the six hours around it, or the next 80 days.
        st.one_of(st.integers(min_value=0, max_value=360), st.integers(min_value=0, max_value=60 * 24 * 80)),
        st.integers(min_value=-1000, max_value=1000),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    readings=readings_strategy,
    # The sample zones, awkward ones among them, as often as all the others.
    zone_name=st.one_of(st.sampled_from(SAMPLE_ZONES), st.sampled_from(ACCEPTED_ZONES)),
    granularity=st.sampled_from(list(Granularity)),
    page_size=st.integers(min_value=1, max_value=50),
)
async def test_buckets_follow_the_rule(
    stub: TimeseriesAggregationServiceAsyncStub,
    data: st.DataObject,
    readings: list[tuple[int, int]],
    zone_name: str,
    granularity: Granularity,
    page_size: int,
) -> None:
    first = data.draw(first_instants(zone_name))
    sent = [(first + timedelta(minutes=minutes), float(quantity)) for minutes, quantity in readings]
    latest = dict(sent)  # last write wins

    buckets = await ingest_and_query(stub, sent, granularity, zone_name, page_size)

    assert bucket_rows(buckets) == expected_buckets(latest, granularity, ZoneInfo(zone_name))
    for bucket in buckets:
        assert bucket.mean_quantity_kwh == bucket.total_quantity_kwh / bucket.reading_count


@pytest.mark.parametrize(
    ("zone_name", "clock_change"),
    [
        # Clocks go back from 01:00 to midnight: a day starts at the first of its two midnights.
        ("America/Havana", "2025-11-02T05:00"),
        ("Atlantic/Azores", "2025-10-26T01:00"),
    ],
)
async def test_a_day_whose_midnight_happens_twice_starts_at_the_first(
    stub: TimeseriesAggregationServiceAsyncStub, zone_name: str, clock_change: str
) -> None:
    change = datetime.fromisoformat(clock_change).replace(tzinfo=UTC)
    sent = [(change + timedelta(minutes=15 * quarter), 1.0) for quarter in range(-12, 13)]

    buckets = await ingest_and_query(stub, sent, Granularity.DAY_OF_MONTH, zone_name, page_size=1)

    assert bucket_rows(buckets) == expected_buckets(dict(sent), Granularity.DAY_OF_MONTH, ZoneInfo(zone_name))


@pytest.mark.parametrize(
    ("zone_name", "granularity", "clock_change"),
    [
        # The clocks jump from 02:45 to 03:45: an hour of 45 minutes, then one of 15.
        ("Pacific/Chatham", Granularity.HOURLY, "2025-09-27T14:00"),
        # Back from 03:45 to 02:45: the 02:30 half hour is cut at its quarter.
        ("Pacific/Chatham", Granularity.HALF_HOURLY, "2000-03-18T14:00"),
        # Back from 02:00 to 01:30: the 01:00 hour of 60 minutes, then again for 30.
        ("Australia/Lord_Howe", Granularity.HOURLY, "2025-04-05T15:00"),
        # Back from 00:01 to 23:01: a one-minute day, then 59 more minutes of the day before.
        ("America/St_Johns", Granularity.DAY_OF_MONTH, "2000-10-29T02:31"),
    ],
)
async def test_clock_changes_off_the_hour_and_across_midnight(
    stub: TimeseriesAggregationServiceAsyncStub, zone_name: str, granularity: Granularity, clock_change: str
) -> None:
    change = datetime.fromisoformat(clock_change).replace(tzinfo=UTC)
    sent = [(change + timedelta(minutes=15 * quarter), 1.0) for quarter in range(-12, 13)]

    buckets = await ingest_and_query(stub, sent, granularity, zone_name, page_size=100)

    assert bucket_rows(buckets) == expected_buckets(dict(sent), granularity, ZoneInfo(zone_name))


@pytest.mark.parametrize(
    ("zone_name", "granularity"),
    [
        ("Asia/Kathmandu", Granularity.HOURLY),
        ("Asia/Kolkata", Granularity.DAY_OF_MONTH),
        ("America/New_York", Granularity.MONTHLY),
    ],
)
async def test_pages_go_on_after_a_bucket_that_starts_before_the_supported_range(
    stub: TimeseriesAggregationServiceAsyncStub, zone_name: str, granularity: Granularity
) -> None:
    # In these zones the bucket of the earliest storable instant starts before it.
    sent = [(EARLIEST_TIME + timedelta(days=days), 1.0) for days in (0, 40, 80)]

    buckets = await ingest_and_query(stub, sent, granularity, zone_name, page_size=1)

    assert bucket_rows(buckets) == expected_buckets(dict(sent), granularity, ZoneInfo(zone_name))
    assert buckets[0].start_time.ToDatetime(tzinfo=UTC) < EARLIEST_TIME
