"""A page of one series reads only as far as it can return: pages still add up to the whole
answer, whatever the gaps between readings, the zone, the granularity and the page size."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import SAMPLE_ZONES, batches, hourly_readings, ingest, offset_changes_near, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.aggregation import make_aggregate_query
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.query_pages import series_page_plan
from timeseries_aggregation.storage.aggregate_sql import series_page_sql
from timeseries_aggregation.storage.database import Database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

GRANULARITIES = [
    pb.GRANULARITY_QUARTER_HOURLY,
    pb.GRANULARITY_HOURLY,
    pb.GRANULARITY_DAY_OF_MONTH,
    pb.GRANULARITY_WEEKLY,
    pb.GRANULARITY_MONTHLY,
    pb.GRANULARITY_YEARLY,
]
# Clusters of readings minutes to a day apart, separated by gaps of minutes to years: sparse
# stretches longer than any page's reach, and dense ones across a page's end.
GAPS_MINUTES = st.sampled_from([1, 15, 60, 60 * 24, 60 * 24 * 40, 60 * 24 * 400])


async def pages(stub: Stub, request: pb.QueryAggregatesRequest) -> list[pb.QueryAggregatesResponse]:
    responses = []
    page = pb.QueryAggregatesRequest()
    page.CopyFrom(request)
    while True:
        response = await stub.QueryAggregates(page)
        responses.append(response)
        if not response.next_page_token:
            return responses
        page.page_token = response.next_page_token


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    zone_name=st.sampled_from(SAMPLE_ZONES),
    granularity=st.sampled_from(GRANULARITIES),
    page_size=st.integers(1, 4),
    gaps=st.lists(
        st.tuples(GAPS_MINUTES, st.integers(1, 30), st.sampled_from([5, 60, 60 * 24])), min_size=1, max_size=8
    ),
    bounded=st.booleans(),
)
async def test_pages_add_up_to_the_whole_answer_over_gaps_of_any_length(
    stub: Stub,
    data: st.DataObject,
    zone_name: str,
    granularity: pb.Granularity,
    page_size: int,
    gaps: list[tuple[int, int, int]],
    bounded: bool,
) -> None:
    around = data.draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
    )
    changes = offset_changes_near(around, ZoneInfo(zone_name))
    moment = (changes[0] if changes else around).replace(second=0, microsecond=0) - timedelta(days=1)
    series_id = f"s{data.draw(st.uuids()).hex[:8]}"
    readings = []
    for gap, cluster, spacing in gaps:
        moment += timedelta(minutes=gap)
        for _ in range(cluster):
            readings.append(pb.Reading(series_id=series_id, time=ts(moment), quantity_kwh=1.0))
            moment += timedelta(minutes=spacing)
    await ingest(stub, [pb.IngestReadingsRequest(readings=readings)])
    request = pb.QueryAggregatesRequest(series_id=series_id, granularity=granularity, time_zone=zone_name)
    if bounded:
        first = readings[0].time.ToDatetime(UTC)
        request.start_time.CopyFrom(ts(first + timedelta(minutes=data.draw(st.integers(0, 60 * 24 * 3)))))
        request.end_time.CopyFrom(ts(first + timedelta(days=data.draw(st.integers(4, 900)))))

    whole = await stub.QueryAggregates(request)
    assert whole.next_page_token == ""
    request.page_size = page_size
    answered = await pages(stub, request)

    assert [bucket for response in answered for bucket in response.buckets] == list(whole.buckets)
    # A page that says more follows holds at least one bucket: paging always moves on.
    assert all(response.buckets for response in answered if response.next_page_token)


def rows_read_from_readings(plan: dict[str, Any]) -> int:
    """The rows every scan of the readings table returned, over all its loops."""
    own = (
        plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1)
        if plan.get("Relation Name") == "readings"
        else 0
    )
    return own + sum(rows_read_from_readings(child) for child in plan.get("Plans", []))


async def test_a_first_page_of_an_unbounded_query_reads_what_it_returns(
    stub: Stub, database: Database
) -> None:
    if not database.capabilities.plans_as_plain_postgresql:
        pytest.skip("counts the rows of the plan's scans of one table, as plain PostgreSQL plans them")
    hours = 24 * 731
    await ingest(stub, batches(hourly_readings("m1", "2024-01-01", hours), 5_000))
    query = make_aggregate_query("m1", Granularity.HOURLY, None, None, "Europe/Berlin")
    for after in (None, datetime(2025, 6, 1, tzinfo=UTC)):
        plan = await series_page_plan(database, query, PageRequest(24, after))
        sql, arguments = series_page_sql(plan, None, rollups=False, guarded=False)
        async with database.query_connection() as connection:
            explained = await connection.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *arguments)
        read = rows_read_from_readings(json.loads(explained)[0]["Plan"])
        # The page's 25 buckets, its reach's margins (26 hours for any clock change, twice, and
        # one bucket), and the probes before and after it; never the two years.
        assert 25 <= read <= 26 + 26 + 27 + 2, read
    response = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_HOURLY, page_size=24)
    )
    assert len(response.buckets) == 24
    assert response.next_page_token


async def test_a_bucket_cut_by_the_end_of_a_pages_reach_waits_for_the_next_page(stub: Stub) -> None:
    # January 1st, then every day from June 3rd: a page of two months reaches from January
    # to mid-May and reads on to mid-June; June, begun there, must not come out cut short.
    readings = [pb.Reading(series_id="m1", time=ts("2025-01-01"), quantity_kwh=1.0)]
    readings += hourly_readings("m1", "2025-06-03", 24 * 58)
    await ingest(stub, batches(readings, 5_000))
    request = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_MONTHLY, page_size=2)
    answered = await pages(stub, request)
    buckets = [bucket for response in answered for bucket in response.buckets]
    assert [(bucket.period, bucket.reading_count) for bucket in buckets] == [
        ("2025-01", 1),
        ("2025-06", 24 * 28),
        ("2025-07", 24 * 30),
    ]
