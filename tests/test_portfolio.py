"""Queries over many meters: a selector instead of a series_id, group_by, series_count, pages
across groups, and the history of such queries."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import (
    SAMPLE_ZONES,
    field_violations,
    ingest,
    missing_series,
    offset_changes_near,
    query_all_pages,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

SITES = {"m1": "berlin", "m2": "berlin", "m3": "hamburg", "m4": None}
CUSTOMERS = {"m1": "acme", "m2": "zeta", "m3": "acme", "m4": "acme"}


async def label_meters(stub: Stub) -> None:
    for series_id, site in SITES.items():
        labels = {"customer": CUSTOMERS[series_id]}
        if site is not None:
            labels["site"] = site
        await stub.UpdateSeries(pb.UpdateSeriesRequest(series=pb.Series(series_id=series_id, labels=labels)))


async def load_hours(stub: Stub, hours: int, start: str = "2025-01-01") -> None:
    """Each meter m<n> reads n kWh every hour."""
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[
                    pb.Reading(
                        series_id=series_id,
                        time=ts(first + timedelta(hours=h)),
                        quantity_kwh=float(series_id[1]),
                    )
                    for h in range(hours)
                ]
            )
            for series_id in SITES
        ],
    )


def portfolio(**fields: object) -> pb.QueryAggregatesRequest:
    fields.setdefault("granularity", pb.GRANULARITY_DAY_OF_MONTH)
    return pb.QueryAggregatesRequest(**fields)  # type: ignore[arg-type]


def rows(buckets: list[pb.Bucket]) -> list[tuple[dict[str, str], str, float, int, int]]:
    return [(dict(b.group), b.period, b.total_quantity_kwh, b.reading_count, b.series_count) for b in buckets]


async def test_a_label_selector_aggregates_its_meters_together(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 48)
    request = portfolio(selector=pb.SeriesSelector(labels={"site": "berlin"}))
    assert rows(await query_all_pages(stub, request)) == [
        ({}, "2025-01-01", 24 * 3.0, 48, 2),
        ({}, "2025-01-02", 24 * 3.0, 48, 2),
    ]
    [first, _] = await query_all_pages(stub, request)
    assert (first.min_quantity_kwh, first.max_quantity_kwh, first.mean_quantity_kwh) == (1.0, 2.0, 1.5)


async def test_groups_come_in_code_point_order_with_an_empty_value_for_a_missing_label(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24)
    request = portfolio(selector=pb.SeriesSelector(labels={"customer": "acme"}), group_by=["site"])
    assert rows(await query_all_pages(stub, request)) == [
        ({"site": ""}, "2025-01-01", 24 * 4.0, 24, 1),
        ({"site": "berlin"}, "2025-01-01", 24 * 1.0, 24, 1),
        ({"site": "hamburg"}, "2025-01-01", 24 * 3.0, 24, 1),
    ]
    by_two = portfolio(selector=pb.SeriesSelector(series_ids=list(SITES)), group_by=["customer", "site"])
    assert [(dict(b.group), b.total_quantity_kwh) for b in await query_all_pages(stub, by_two)] == [
        ({"customer": "acme", "site": ""}, 96.0),
        ({"customer": "acme", "site": "berlin"}, 24.0),
        ({"customer": "acme", "site": "hamburg"}, 72.0),
        ({"customer": "zeta", "site": "berlin"}, 48.0),
    ]


async def test_group_by_series_id_and_series_counts_per_bucket(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24)
    # m3 also reads on the second day: there the group has one series with readings.
    await load_hours_of(stub, "m3", "2025-01-02", 5)
    request = portfolio(selector=pb.SeriesSelector(series_ids=["m3", "m1"]), group_by=["series_id"])
    assert rows(await query_all_pages(stub, request)) == [
        ({"series_id": "m1"}, "2025-01-01", 24.0, 24, 1),
        ({"series_id": "m3"}, "2025-01-01", 72.0, 24, 1),
        ({"series_id": "m3"}, "2025-01-02", 15.0, 5, 1),
    ]
    together = portfolio(selector=pb.SeriesSelector(series_ids=["m3", "m1"]))
    assert [b.series_count for b in await query_all_pages(stub, together)] == [2, 1]


async def load_hours_of(stub: Stub, series_id: str, start: str, hours: int) -> None:
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    readings = [
        pb.Reading(series_id=series_id, time=ts(first + timedelta(hours=h)), quantity_kwh=3.0)
        for h in range(hours)
    ]
    await ingest(stub, [pb.IngestReadingsRequest(readings=readings)])


async def test_pages_run_across_groups_without_gaps_or_repeats(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24 * 5)
    request = portfolio(selector=pb.SeriesSelector(series_ids=list(SITES)), group_by=["series_id"])
    whole = rows(await query_all_pages(stub, request))
    assert len(whole) == 4 * 5
    for page_size in (1, 3, 7):
        request.page_size = page_size
        assert rows(await query_all_pages(stub, request)) == whole
    # A token belongs to its selector and group_by.
    request.page_size = 2
    first = await stub.QueryAggregates(request)
    other = portfolio(selector=pb.SeriesSelector(series_ids=list(SITES)), page_token=first.next_page_token)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(other)
    assert field_violations(raised.value) == ["page_token"]


async def test_a_label_selector_matching_nothing_returns_no_buckets(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24)
    for selector in (
        pb.SeriesSelector(labels={"site": "paris"}),
        pb.SeriesSelector(series_ids=["m1", "m3"], labels={"site": "paris"}),
    ):
        response = await stub.QueryAggregates(portfolio(selector=selector))
        assert list(response.buckets) == []


async def test_series_ids_not_in_the_catalog_are_not_found_and_named(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24)
    selector = pb.SeriesSelector(series_ids=["m1", "x2", "x1"], labels={"site": "berlin"})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(portfolio(selector=selector, group_by=["series_id"]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert (raised.value.details() or "").startswith(
        "selector.series_ids: series 'x1', 'x2' are not in the catalog"
    )
    assert missing_series(raised.value) == ["x1", "x2"]
    # Many are named up to a bound, and counted beyond it.
    many = [f"x{number:02d}" for number in range(25)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(portfolio(selector=pb.SeriesSelector(series_ids=["m1", *many])))
    assert "'x09' and 15 more are not in the catalog" in (raised.value.details() or "")
    assert missing_series(raised.value) == many[:10]
    assert list((await stub.ListQueryHistory(pb.ListQueryHistoryRequest())).entries) == []


async def test_long_missing_ids_are_named_within_what_metadata_carries(stub: Stub) -> None:
    # 30 ids of 128 characters of 3 bytes each: named whole, the status would exceed the 8 KiB
    # of metadata a client accepts, and reach it as RESOURCE_EXHAUSTED.
    long_ids = [f"{number:02d}" + "€" * 126 for number in range(30)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(portfolio(selector=pb.SeriesSelector(series_ids=long_ids)))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing_series(raised.value) == long_ids[:2]
    assert "and 28 more are not in the catalog" in (raised.value.details() or "")


async def test_a_one_series_query_can_group_by_its_labels(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24)
    request = portfolio(series_id="m2", group_by=["site", "customer"])
    assert rows(await query_all_pages(stub, request)) == [
        ({"site": "berlin", "customer": "zeta"}, "2025-01-01", 48.0, 24, 1)
    ]
    # Without group_by, a one-series bucket says it holds one series.
    [bucket] = (await stub.QueryAggregates(portfolio(series_id="m2"))).buckets
    assert (bucket.series_count, dict(bucket.group)) == (1, {})


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (portfolio(series_id="m1", selector=pb.SeriesSelector(series_ids=["m1"])), "selector"),
        (portfolio(), "series_id"),
        (portfolio(selector=pb.SeriesSelector()), "selector"),
        (portfolio(selector=pb.SeriesSelector(series_ids=[""])), "selector.series_ids[0]"),
        (portfolio(selector=pb.SeriesSelector(labels={"Site": "x"})), "selector.labels['Site']"),
        (portfolio(series_id="m1", group_by=["Site"]), "group_by[0]"),
        (portfolio(series_id="m1", group_by=["site", "site"]), "group_by[1]"),
        (portfolio(series_id="m1", group_by=[f"k{n}" for n in range(9)]), "group_by"),
    ],
)
async def test_bad_portfolio_requests_name_the_field(
    stub: Stub, request_: pb.QueryAggregatesRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]


async def test_history_records_the_selector_and_group_by(stub: Stub) -> None:
    await label_meters(stub)
    await load_hours(stub, 24)
    await stub.QueryAggregates(portfolio(series_id="m1"))
    await stub.QueryAggregates(
        portfolio(
            selector=pb.SeriesSelector(series_ids=["m1", "m2"], labels={"site": "berlin"}),
            group_by=["customer"],
        )
    )
    newest, oldest = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=2))).entries
    assert newest.series_id == ""
    assert list(newest.selector.series_ids) == ["m1", "m2"]
    assert dict(newest.selector.labels) == {"site": "berlin"}
    assert list(newest.group_by) == ["customer"]
    assert newest.bucket_count == 2
    assert not newest.include_empty_buckets
    # A one-series entry looks as it always did.
    assert oldest.series_id == "m1"
    assert not oldest.HasField("selector")
    assert list(oldest.group_by) == []
    await stub.QueryAggregates(portfolio(series_id="m1", include_empty_buckets=True))
    [entry] = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=1))).entries
    assert (entry.series_id, entry.include_empty_buckets, entry.bucket_count) == ("m1", True, 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    zone_name=st.sampled_from(SAMPLE_ZONES),
    granularity=st.sampled_from(
        [pb.GRANULARITY_HOURLY, pb.GRANULARITY_DAY_OF_MONTH, pb.GRANULARITY_WEEKLY, pb.GRANULARITY_MONTHLY]
    ),
    readings=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 60 * 24 * 40), st.integers(-50, 50)),
        min_size=1,
        max_size=40,
    ),
)
async def test_group_totals_are_the_sums_of_their_members_one_series_answers(
    stub: Stub,
    data: st.DataObject,
    zone_name: str,
    granularity: pb.Granularity,
    readings: list[tuple[int, int, int]],
) -> None:
    # Readings start near one of the zone's clock changes, so DST days are in play.
    around = data.draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
    )
    changes = offset_changes_near(around, ZoneInfo(zone_name))
    first = (changes[0] if changes else around).replace(second=0, microsecond=0) - timedelta(days=2)
    run = data.draw(st.uuids()).hex[:8]
    members = [f"p{run}-{n}" for n in range(4)]
    for n, series_id in enumerate(members):
        await stub.UpdateSeries(
            pb.UpdateSeriesRequest(
                series=pb.Series(series_id=series_id, labels={"half": str(n % 2), "run": run})
            )
        )
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[
                    pb.Reading(
                        series_id=members[n], time=ts(first + timedelta(minutes=m)), quantity_kwh=float(q)
                    )
                    for n, m, q in readings
                ]
            )
        ],
    )
    expected: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for n, series_id in enumerate(members):
        one = await query_all_pages(
            stub, pb.QueryAggregatesRequest(series_id=series_id, granularity=granularity, time_zone=zone_name)
        )
        for bucket in one:
            key = (str(n % 2), bucket.start_time.seconds)
            expected[key][0] += bucket.total_quantity_kwh
            expected[key][1] += bucket.reading_count
    grouped = await query_all_pages(
        stub,
        pb.QueryAggregatesRequest(
            selector=pb.SeriesSelector(labels={"run": run}),
            group_by=["half"],
            granularity=granularity,
            time_zone=zone_name,
            page_size=data.draw(st.integers(1, 20)),
        ),
    )
    found = {
        (b.group["half"], b.start_time.seconds): [b.total_quantity_kwh, b.reading_count] for b in grouped
    }
    assert found == {key: [pytest.approx(total), count] for key, (total, count) in expected.items()}
