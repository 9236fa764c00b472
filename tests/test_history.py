"""ListQueryHistory: every successful query recorded once, newest first, paged by keyset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from tests.support import field_violations, hourly_readings, ingest, query_all_pages, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


async def add_series(stub: Stub, *series_ids: str) -> None:
    """Series in the catalog, without readings: a query of them answers no buckets."""
    for series_id in series_ids:
        await stub.UpdateSeries(
            pb.UpdateSeriesRequest(series=pb.Series(series_id=series_id, labels={"a": "b"}))
        )


async def run_queries(stub: Stub, count: int) -> None:
    await add_series(stub, *(f"meter-{number}" for number in range(count)))
    for number in range(count):
        await stub.QueryAggregates(
            pb.QueryAggregatesRequest(series_id=f"meter-{number}", granularity=pb.GRANULARITY_MONTHLY)
        )


async def test_entry_records_every_parameter(stub: Stub) -> None:
    await add_series(stub, "m1", "m2")
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            series_id="m1",
            granularity=pb.GRANULARITY_HOURLY,
            start_time=ts("2025-10-01"),
            end_time=ts("2025-10-24"),
            time_zone="Europe/Berlin",
            page_size=25,
        )
    )
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m2", granularity=pb.GRANULARITY_DAY_OF_MONTH)
    )
    response = await stub.ListQueryHistory(pb.ListQueryHistoryRequest())
    newest, oldest = response.entries
    assert oldest.series_id == "m1"
    assert oldest.granularity == pb.GRANULARITY_HOURLY
    assert oldest.start_time == ts("2025-10-01")
    assert oldest.end_time == ts("2025-10-24")
    assert oldest.time_zone == "Europe/Berlin"
    assert oldest.page_size == 25
    assert not oldest.continued_page
    assert oldest.bucket_count == 0
    assert newest.series_id == "m2"
    assert not newest.HasField("start_time")
    assert not newest.HasField("end_time")
    assert newest.time_zone == "UTC"
    assert newest.page_size == 1000
    assert newest.query_time.ToDatetime() >= oldest.query_time.ToDatetime()
    assert newest.id > oldest.id


async def test_default_page_is_the_last_ten_newest_first(stub: Stub) -> None:
    await run_queries(stub, 12)
    response = await stub.ListQueryHistory(pb.ListQueryHistoryRequest())
    assert [entry.series_id for entry in response.entries] == [f"meter-{n}" for n in range(11, 1, -1)]
    assert response.next_page_token
    rest = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_token=response.next_page_token))
    assert [entry.series_id for entry in rest.entries] == ["meter-1", "meter-0"]
    assert rest.next_page_token == ""


async def test_paging_is_stable_while_new_queries_arrive(stub: Stub) -> None:
    await run_queries(stub, 5)
    first = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=2))
    assert [entry.series_id for entry in first.entries] == ["meter-4", "meter-3"]
    await add_series(stub, "late")
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="late", granularity=pb.GRANULARITY_MONTHLY)
    )
    seen = [entry.series_id for entry in first.entries]
    token = first.next_page_token
    while token:
        page = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=2, page_token=token))
        seen.extend(entry.series_id for entry in page.entries)
        token = page.next_page_token
    assert seen == ["meter-4", "meter-3", "meter-2", "meter-1", "meter-0"]


async def test_a_query_of_many_pages_is_one_entry(stub: Stub) -> None:
    readings = hourly_readings("m1", "2025-01-01", 72)
    await ingest(stub, [pb.IngestReadingsRequest(readings=readings)])
    request = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_DAY_OF_MONTH, page_size=2)
    assert len(await query_all_pages(stub, request)) == 3
    entries = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest())).entries
    # The entry is the first page's: its size and bucket count; the page after it adds none.
    assert [(entry.series_id, entry.continued_page, entry.bucket_count) for entry in entries] == [
        ("m1", False, 2)
    ]


async def test_a_selector_query_of_many_pages_is_one_entry(stub: Stub) -> None:
    readings = hourly_readings("m1", "2025-01-01", 48) + hourly_readings("m2", "2025-01-01", 48)
    await ingest(stub, [pb.IngestReadingsRequest(readings=readings)])
    request = pb.QueryAggregatesRequest(
        selector=pb.SeriesSelector(series_ids=["m1", "m2"]),
        group_by=["series_id"],
        granularity=pb.GRANULARITY_DAY_OF_MONTH,
        page_size=1,
    )
    assert len(await query_all_pages(stub, request)) == 4
    entries = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest())).entries
    assert [(list(entry.selector.series_ids), entry.bucket_count) for entry in entries] == [(["m1", "m2"], 1)]


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (pb.ListQueryHistoryRequest(page_size=-5), "page_size"),
        (pb.ListQueryHistoryRequest(page_token="%%%"), "page_token"),
    ],
)
async def test_invalid_history_request(
    stub: Stub, request_message: pb.ListQueryHistoryRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListQueryHistory(request_message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]


async def test_page_size_is_coerced_to_the_maximum(stub: Stub) -> None:
    await run_queries(stub, 3)
    response = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=1_000_000))
    assert len(response.entries) == 3
    assert response.next_page_token == ""
