"""Property: for random readings, zones and page sizes, the service's buckets equal a
reference computed here with zoneinfo, one reading at a time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import SAMPLE_ZONES, ingest, query_all_pages, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub


GRANULARITIES = [pb.GRANULARITY_HOURLY, pb.GRANULARITY_DAY_OF_MONTH, pb.GRANULARITY_MONTHLY]
LABELS = {
    pb.GRANULARITY_HOURLY: "%Y-%m-%dT%H:00",
    pb.GRANULARITY_DAY_OF_MONTH: "%Y-%m-%d",
    pb.GRANULARITY_MONTHLY: "%Y-%m",
}


def reference_bounds(
    instant: datetime, granularity: pb.Granularity, zone: ZoneInfo
) -> tuple[datetime, datetime]:
    local = instant.astimezone(zone)
    if granularity == pb.GRANULARITY_HOURLY:
        start = instant - timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
        return start, start + timedelta(hours=1)
    if granularity == pb.GRANULARITY_DAY_OF_MONTH:
        day = local.date()
        return (
            datetime.combine(day, time(), zone).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC),
        )
    month_start = datetime(local.year, local.month, 1, tzinfo=zone)
    next_month = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone)
    return month_start.astimezone(UTC), next_month.astimezone(UTC)


readings_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=60 * 24 * 80),  # minutes after the base instant
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
    base=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    readings=readings_strategy,
    zone_name=st.sampled_from(SAMPLE_ZONES),
    granularity=st.sampled_from(GRANULARITIES),
    page_size=st.integers(min_value=1, max_value=50),
)
async def test_buckets_match_the_reference(
    stub: TimeseriesAggregationServiceAsyncStub,
    base: datetime,
    readings: list[tuple[int, int]],
    zone_name: str,
    granularity: pb.Granularity,
    page_size: int,
) -> None:
    series_id = f"property-{uuid.uuid4()}"
    base = base.replace(second=0, microsecond=0)
    latest: dict[datetime, float] = {}
    for minutes, quantity in readings:
        latest[base + timedelta(minutes=minutes)] = float(quantity)  # last write wins
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[
                    pb.Reading(series_id=series_id, time=ts(base + timedelta(minutes=m)), quantity_kwh=q)
                    for m, q in readings
                ]
            )
        ],
    )

    zone = ZoneInfo(zone_name)
    grouped: dict[tuple[datetime, datetime], list[float]] = defaultdict(list)
    for instant, latest_quantity in latest.items():
        grouped[reference_bounds(instant, granularity, zone)].append(latest_quantity)
    expected = [
        (
            ts(start),
            ts(end),
            start.astimezone(zone).strftime(LABELS[granularity]),
            sum(values),
            min(values),
            max(values),
            len(values),
        )
        for (start, end), values in sorted(grouped.items())
    ]

    buckets = await query_all_pages(
        stub,
        pb.QueryAggregatesRequest(
            series_id=series_id, granularity=granularity, time_zone=zone_name, page_size=page_size
        ),
    )
    actual = [
        (
            b.start_time,
            b.end_time,
            b.period,
            b.total_quantity_kwh,
            b.min_quantity_kwh,
            b.max_quantity_kwh,
            b.reading_count,
        )
        for b in buckets
    ]
    assert actual == expected
    for bucket in buckets:
        assert bucket.mean_quantity_kwh == bucket.total_quantity_kwh / bucket.reading_count
