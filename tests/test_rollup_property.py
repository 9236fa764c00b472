"""Property: for random dense readings, overwrites and deletions, any zone, granularity, range
and page size, a rolled-up series' buckets read through its rollups are the buckets its
readings give (the same query with the series' rollups switched off), asked of the series or
of a portfolio of it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import (
    SAMPLE_ZONES,
    bucket_rows,
    catalog_matches_readings,
    first_instants,
    ingest,
    query_all_pages,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.transport.convert import GRANULARITY_TO_PROTO

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# Beyond the sample zones: clocks changed at 00:01 (an hour holds a change), half-hour changes
# (Lord Howe), always at UTC but not named so (daily rollups), a fixed whole-hour offset.
ZONES = [*SAMPLE_ZONES, "America/Moncton", "Australia/Lord_Howe", "Atlantic/Reykjavik", "Etc/GMT-5"]


# Minutes after the first instant, and eighths of a kWh: sums of eighths are exact in any order,
# so both ways of adding agree to the last bit.
stream_strategy = st.lists(
    st.tuples(
        st.one_of(
            st.integers(min_value=0, max_value=600),
            st.integers(min_value=0, max_value=60 * 24 * 100),
        ),
        st.integers(min_value=-8000, max_value=8000),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    streams=st.lists(stream_strategy, min_size=1, max_size=3),
    zone_name=st.sampled_from(ZONES),
    granularity=st.sampled_from(list(Granularity)),
    page_size=st.integers(min_value=1, max_value=40),
)
async def test_rollups_give_the_buckets_the_readings_give(
    stub: TimeseriesAggregationServiceAsyncStub,
    sql: asyncpg.Connection,
    data: st.DataObject,
    streams: list[list[tuple[int, int]]],
    zone_name: str,
    granularity: Granularity,
    page_size: int,
) -> None:
    # A day into the supported range at least: ranges start up to ten hours before it.
    first = max(data.draw(first_instants(zone_name)), datetime(1970, 1, 2, tzinfo=UTC))
    series_id = f"rollup-property-{uuid.uuid4()}"
    # Two readings in one minute make the series dense from its first stream.
    dense = [(timedelta(0), 8), (timedelta(seconds=30), 16)]
    for index, stream in enumerate(streams):
        sent = [*(dense if index == 0 else []), *((timedelta(minutes=m), eighths) for m, eighths in stream)]
        readings = [
            pb.Reading(series_id=series_id, time=ts(first + after), quantity_kwh=eighths / 8)
            for after, eighths in sent
        ]
        await ingest(
            stub,
            [pb.IngestReadingsRequest(readings=readings[i : i + 17]) for i in range(0, len(readings), 17)],
        )
    if data.draw(st.booleans()):
        start = first + timedelta(minutes=data.draw(st.integers(0, 60 * 24 * 100)))
        end = start + timedelta(minutes=data.draw(st.integers(1, 60 * 24 * 20)))
        await stub.DeleteReadings(
            pb.DeleteReadingsRequest(
                selector=pb.SeriesSelector(series_ids=[series_id]), start_time=ts(start), end_time=ts(end)
            )
        )
    assert await sql.fetchval("SELECT rolled_up FROM series WHERE series_id = $1", series_id)
    await catalog_matches_readings(sql)

    request = pb.QueryAggregatesRequest(
        series_id=series_id,
        granularity=GRANULARITY_TO_PROTO[granularity],
        time_zone=zone_name,
        page_size=page_size,
    )
    edges = data.draw(st.sampled_from(["none", "inside hours", "on whole hours"]))
    if edges != "none":
        # A range with edges inside hours (and days), or on whole UTC hours, which the
        # statement reads from rollups alone.
        start = first + timedelta(minutes=data.draw(st.integers(-600, 60 * 24 * 50)))
        end = start + timedelta(minutes=data.draw(st.integers(1, 60 * 24 * 60)))
        if edges == "on whole hours":
            start = start.replace(minute=0, second=0, microsecond=0)
            end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        request.start_time.CopyFrom(ts(start))
        request.end_time.CopyFrom(ts(end))
    # And as a portfolio of the one series.
    portfolio = pb.QueryAggregatesRequest()
    portfolio.CopyFrom(request)
    portfolio.ClearField("series_id")
    portfolio.selector.series_ids.append(series_id)
    through_rollups = [await query_all_pages(stub, each) for each in (request, portfolio)]
    await sql.execute("UPDATE series SET rolled_up = false WHERE series_id = $1", series_id)
    try:
        through_readings = [await query_all_pages(stub, each) for each in (request, portfolio)]
    finally:
        await sql.execute("UPDATE series SET rolled_up = true WHERE series_id = $1", series_id)
    assert [bucket_rows(buckets) for buckets in through_rollups] == [
        bucket_rows(buckets) for buckets in through_readings
    ]
