"""The Python clients: credentials, message building, typed results, paging and retries."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest

from tests.conftest import server_config
from tests.support import eventually
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    AsyncTimeseriesClient,
    Bucket,
    HistoryEntry,
    IngestResult,
    QueryOptions,
    Reading,
    ReadingLike,
    RetryPolicy,
    Series,
    TimeseriesClient,
    auth_metadata,
    delete_readings_request,
    list_series_request,
    query_request,
    row_messages,
    series_messages,
    update_series_request,
)
from timeseries_aggregation.limits import MAX_READINGS_PER_MESSAGE
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

Context = grpc.aio.ServicerContext[Any, Any]
QUICK_RETRIES = RetryPolicy(max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.01)


def test_api_key_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    assert auth_metadata() == ()
    assert auth_metadata("tsa_given") == (("authorization", "Bearer tsa_given"),)
    monkeypatch.setenv(API_KEY_VARIABLE, "tsa_from_env")
    assert auth_metadata() == (("authorization", "Bearer tsa_from_env"),)
    assert auth_metadata("tsa_given") == (("authorization", "Bearer tsa_given"),)


def test_series_messages_split_columns_into_messages() -> None:
    times = np.arange(5, dtype=np.int64) * 3_600_000_000
    messages = list(series_messages("m", times, [1.0, 2.0, 3.0, 4.0, 5.0], 2))
    assert [len(m.series_readings[0].time_unix_micros) for m in messages] == [2, 2, 1]
    assert list(messages[2].series_readings[0].quantity_kwh) == [5.0]
    assert {m.series_readings[0].series_id for m in messages} == {"m"}
    with pytest.raises(ValueError, match="same length"):
        series_messages("m", times, [1.0], 2)


def test_row_messages_carry_microseconds_as_timestamps() -> None:
    [message] = list(row_messages([("m", 1_700_000_000_123_456, 2.5)], 10))
    [reading] = message.readings
    assert (reading.time.seconds, reading.time.nanos) == (1_700_000_000, 123_456_000)
    assert (reading.series_id, reading.quantity_kwh) == ("m", 2.5)


@pytest.mark.parametrize("size", [0, -1, MAX_READINGS_PER_MESSAGE + 1])
def test_message_sizes_outside_the_api_limit_are_refused_before_any_message(size: int) -> None:
    expected = f"must be 1 to 50,000 readings, got {size}"
    with pytest.raises(ValueError, match=expected):
        series_messages("m", [0], [1.0], size)
    with pytest.raises(ValueError, match=expected):
        row_messages([("m", 0, 1.0)], size)
    # No server listens on port 1: a call would fail with UNAVAILABLE, not ValueError.
    with (
        TimeseriesClient("127.0.0.1:1") as client,
        pytest.raises(ValueError, match=f"^batch_size {expected}"),
    ):
        client.ingest([("m", datetime(2025, 1, 1, tzinfo=UTC), 1.0)], batch_size=size)


async def test_blocking_client_ingests_queries_and_pages(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    readings: list[ReadingLike] = [("m1", start + timedelta(hours=hour), 2.0) for hour in range(72)]
    readings.append(Reading("m1", start, 5.0))  # the last write of a key wins

    def work() -> tuple[IngestResult, list[Bucket], list[HistoryEntry]]:
        with TimeseriesClient(target, timeout_seconds=10) as client:
            response = client.ingest(readings, batch_size=10)
            buckets = list(client.query("m1", "daily", page_size=1, time_zone="UTC"))
            entries = list(client.history(page_size=1, limit=2))
        return response, buckets, entries

    result, buckets, entries = await asyncio.to_thread(work)
    assert (result.readings_received, result.messages_received, result.series_count) == (73, 8, 1)
    assert result.raw.readings_received == 73
    assert [(bucket.period, bucket.total_quantity_kwh) for bucket in buckets] == [
        ("2025-01-01", 51.0),
        ("2025-01-02", 48.0),
        ("2025-01-03", 48.0),
    ]
    assert (buckets[0].start_time, buckets[0].end_time) == (start, start + timedelta(days=1))
    # One entry for the query's three pages.
    assert [(entry.series_id, entry.continued_page, entry.bucket_count) for entry in entries] == [
        ("m1", False, 1)
    ]


async def test_results_are_frozen_dataclasses_with_aware_datetimes_and_the_raw_message(
    server: RunningServer,
) -> None:
    start = datetime(2025, 10, 26, tzinfo=UTC)
    async with AsyncTimeseriesClient(f"127.0.0.1:{server.port}", timeout_seconds=10) as client:
        await client.ingest([Reading("z1", start + timedelta(hours=hour), 1.0) for hour in range(3)])
        [bucket] = [
            bucket
            async for bucket in client.query("z1", "daily", time_zone="Europe/Berlin", start_time=start)
        ]
        [entry] = [entry async for entry in client.history(limit=1)]

    assert bucket == Bucket(
        period="2025-10-26",
        start_time=datetime(2025, 10, 25, 22, tzinfo=UTC),
        end_time=datetime(2025, 10, 26, 23, tzinfo=UTC),  # 25 hours: the clocks went back
        total_quantity_kwh=3.0,
        min_quantity_kwh=1.0,
        max_quantity_kwh=1.0,
        mean_quantity_kwh=1.0,
        reading_count=3,
        raw=pb.Bucket(),  # not compared: the raw message is one attribute away, not part of the value
    )
    assert bucket.raw.period == "2025-10-26"
    assert isinstance(entry, HistoryEntry)
    assert entry.query_time.tzinfo is not None
    assert abs(datetime.now(UTC) - entry.query_time) < timedelta(minutes=5)
    assert (entry.series_id, entry.granularity, entry.time_zone) == ("z1", "daily", "Europe/Berlin")
    assert (entry.start_time, entry.end_time, entry.bucket_count) == (start, None, 1)
    assert entry.raw.series_id == "z1"
    with pytest.raises(FrozenInstanceError):
        entry.series_id = "other"  # type: ignore[misc]


async def test_async_client_takes_async_iterables_and_pages(server: RunningServer) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)

    async def readings() -> AsyncIterator[Reading]:
        for hour in range(48):
            yield Reading("a1", start + timedelta(hours=hour), 1.5)

    async with AsyncTimeseriesClient(f"127.0.0.1:{server.port}", timeout_seconds=10) as client:
        response = await client.ingest(readings(), batch_size=7)
        assert (response.readings_received, response.messages_received) == (48, 7)
        monthly = [bucket async for bucket in client.query("a1", "monthly")]
        assert [(b.period, b.total_quantity_kwh, b.reading_count) for b in monthly] == [("2025-03", 72.0, 48)]
        hourly = [bucket async for bucket in client.query("a1", "hourly", page_size=5, start_time=start)]
        assert len(hourly) == 48
        entries = [entry async for entry in client.history(limit=3)]
        # One entry per query, however many pages it took.
        assert [entry.granularity for entry in entries] == ["hourly", "monthly"]


def test_an_update_masks_only_what_is_given() -> None:
    request = update_series_request("m", labels={"site": "a"})
    assert list(request.update_mask.paths) == ["labels"]
    assert not request.series.HasField("reading_interval")
    request = update_series_request("m", reading_interval=timedelta(minutes=15))
    assert list(request.update_mask.paths) == ["reading_interval"]
    assert (request.series.reading_interval.seconds, dict(request.series.labels)) == (900, {})
    request = update_series_request("m", labels={}, clear_reading_interval=True)
    assert list(request.update_mask.paths) == ["labels", "reading_interval"]
    assert not request.series.HasField("reading_interval")
    # An empty mask would mean every field to the service: refused before any call.
    with pytest.raises(ValueError, match=r"^nothing to update"):
        update_series_request("m")
    with pytest.raises(ValueError, match="not both"):
        update_series_request("m", reading_interval=timedelta(seconds=60), clear_reading_interval=True)
    with pytest.raises(TypeError, match="not one string"):
        list_series_request("meter-1")


async def test_blocking_client_updates_series_by_mask(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    start = datetime(2025, 1, 1, tzinfo=UTC)

    def work() -> list[Series]:
        with TimeseriesClient(target, timeout_seconds=10) as client:
            return [
                client.update_series("m1", labels={"site": "berlin"}, reading_interval=timedelta(hours=1)),
                client.update_series("m1", labels={"site": "hamburg", "kind": "pv"}),
                client.update_series("m1", clear_reading_interval=True),
                client.update_series("m1", reading_interval=timedelta(minutes=15)),
                client.update_series("m1", labels={}),
            ]

    created, relabelled, cleared, declared, unlabelled = await asyncio.to_thread(work)
    assert created == Series(
        series_id="m1",
        labels={"site": "berlin"},
        reading_interval=timedelta(hours=1),
        first_reading_time=None,
        last_reading_time=None,
        reading_count=0,
        raw=pb.Series(),
    )
    assert created.raw.series_id == "m1"
    # Labels are replaced as a whole; what the mask leaves out stays as stored.
    assert (relabelled.labels, relabelled.reading_interval) == (
        {"site": "hamburg", "kind": "pv"},
        timedelta(hours=1),
    )
    assert (cleared.labels, cleared.reading_interval) == ({"site": "hamburg", "kind": "pv"}, None)
    assert (declared.labels, declared.reading_interval) == (
        {"site": "hamburg", "kind": "pv"},
        timedelta(minutes=15),
    )
    assert (unlabelled.labels, unlabelled.reading_interval) == ({}, timedelta(minutes=15))

    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        await client.ingest([Reading("m1", start + timedelta(hours=hour), 1.0) for hour in range(3)])
        series = await client.update_series("m1", labels={"site": "berlin"})
    assert (series.first_reading_time, series.last_reading_time) == (start, start + timedelta(hours=2))
    assert series.reading_count == 3
    assert series.reading_interval == timedelta(minutes=15)


async def test_a_refused_update_raises_the_service_error_and_stores_nothing(server: RunningServer) -> None:
    async with AsyncTimeseriesClient(
        f"127.0.0.1:{server.port}", timeout_seconds=10, retry=QUICK_RETRIES
    ) as client:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.update_series("m1", labels={"Bad": "x"})
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (raised.value.details() or "").startswith("series.labels['Bad']: is not a valid label key")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.update_series("m1", reading_interval=timedelta(days=2))
        assert (raised.value.details() or "").startswith("series.reading_interval: is 172800 s")
        assert [series async for series in client.list_series()] == []


async def test_both_clients_list_series_by_selector_across_pages(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        for series_id, site in (("c", "north"), ("a", "north"), ("b", "south"), ("B", "north")):
            await client.update_series(series_id, labels={"site": site, "kind": "meter"})
        every = [series.series_id async for series in client.list_series(page_size=1)]
        north = [
            series.series_id async for series in client.list_series(labels={"site": "north"}, page_size=1)
        ]
        picked = [
            series.series_id
            async for series in client.list_series(series_ids=["c", "b"], labels={"kind": "meter"})
        ]
        # A series id the catalog lacks is NOT_FOUND, raised as is (not retried).
        with pytest.raises(grpc.RpcError) as raised:
            [series async for series in client.list_series(series_ids=["c", "unknown"])]
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        first_two = [series.series_id async for series in client.list_series(page_size=1, limit=2)]
    assert every == ["B", "a", "b", "c"]  # code point order: upper case first
    assert north == ["B", "a", "c"]
    assert picked == ["b", "c"]
    assert first_two == ["B", "a"]

    def blocking() -> tuple[list[Series], list[Series]]:
        with TimeseriesClient(target, timeout_seconds=10) as client:
            south = list(client.list_series(labels={"site": "south"}))
            return south, list(client.list_series(page_size=2, limit=3))

    south, limited = await asyncio.to_thread(blocking)
    assert [(series.series_id, series.labels) for series in south] == [
        ("b", {"site": "south", "kind": "meter"})
    ]
    assert [series.series_id for series in limited] == ["B", "a", "b"]


def test_a_deletion_request_needs_a_selector_and_takes_naive_times_as_utc() -> None:
    start, end = datetime(2025, 10, 1), datetime(2025, 10, 2, tzinfo=UTC)
    request = delete_readings_request(["m1", "m2"], {"site": "a"}, start_time=start, end_time=end)
    assert (list(request.selector.series_ids), dict(request.selector.labels)) == (["m1", "m2"], {"site": "a"})
    assert request.start_time.ToDatetime(tzinfo=UTC) == start.replace(tzinfo=UTC)
    assert request.end_time.ToDatetime(tzinfo=UTC) == end
    request = delete_readings_request(labels={"site": "a"}, start_time=start, end_time=end)
    assert (list(request.selector.series_ids), dict(request.selector.labels)) == ([], {"site": "a"})
    # The service would refuse an empty selector; it never means every series.
    with pytest.raises(ValueError, match=r"^name the series to delete from"):
        delete_readings_request(start_time=start, end_time=end)
    with pytest.raises(ValueError, match=r"^name the series to delete from"):
        delete_readings_request([], {}, start_time=start, end_time=end)
    with pytest.raises(TypeError, match="not one string"):
        delete_readings_request("meter-1", start_time=start, end_time=end)


async def test_both_clients_refuse_an_empty_deletion_before_any_call() -> None:
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    # No server listens on port 1: a call would fail with UNAVAILABLE, not ValueError.
    async with AsyncTimeseriesClient("127.0.0.1:1", retry=QUICK_RETRIES) as client:
        with pytest.raises(ValueError, match=r"^name the series to delete from"):
            await client.delete_readings(start_time=start, end_time=end)
        with pytest.raises(TypeError, match="not one string"):
            await client.delete_readings(series_ids="meter-1", start_time=start, end_time=end)
    with (
        TimeseriesClient("127.0.0.1:1", retry=QUICK_RETRIES) as blocking,
        pytest.raises(ValueError, match=r"^name the series to delete from"),
    ):
        blocking.delete_readings(labels={}, start_time=start, end_time=end)


async def test_both_clients_delete_readings_by_selector(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)

    async def reading_counts(client: AsyncTimeseriesClient) -> dict[str, int]:
        return {series.series_id: series.reading_count async for series in client.list_series()}

    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        for series_id, site in (("a", "north"), ("b", "north"), ("c", "south")):
            await client.update_series(series_id, labels={"site": site})
            await client.ingest([Reading(series_id, start + timedelta(hours=h), 1.0) for h in range(48)])
        # By id, the range's end exclusive: the first day of a.
        assert await client.delete_readings(series_ids=["a"], start_time=start, end_time=start + day) == 24
        assert await reading_counts(client) == {"a": 24, "b": 48, "c": 48}
        # By label, with naive times (UTC): the second day of a and b.
        deleted = await client.delete_readings(
            labels={"site": "north"}, start_time=datetime(2025, 1, 2), end_time=datetime(2025, 1, 3)
        )
        assert deleted == 48
        assert await reading_counts(client) == {"a": 0, "b": 24, "c": 48}
        # Ids and labels together must both match; deleting a range again deletes nothing more.
        assert (
            await client.delete_readings(
                series_ids=["c"], labels={"site": "north"}, start_time=start, end_time=start + 2 * day
            )
            == 0
        )
        [a] = [series async for series in client.list_series(series_ids=["a"])]
    # The series stays, with its labels and no readings.
    assert (a.labels, a.reading_count, a.first_reading_time, a.last_reading_time) == (
        {"site": "north"},
        0,
        None,
        None,
    )

    def blocking() -> tuple[int, int, list[Series]]:
        with TimeseriesClient(target, timeout_seconds=10) as client:
            six, noon = start + timedelta(hours=6), start + timedelta(hours=12)
            first = client.delete_readings(series_ids=["b", "c"], start_time=six, end_time=noon)
            again = client.delete_readings(series_ids=["b", "c"], start_time=six, end_time=noon)
            return first, again, list(client.list_series(series_ids=["b", "c"]))

    first, again, listed = await asyncio.to_thread(blocking)
    assert (first, again) == (6 + 6, 0)
    assert [(series.series_id, series.reading_count) for series in listed] == [("b", 18), ("c", 42)]
    assert listed[1].first_reading_time == start  # the hours went from the middle of c


def test_a_query_request_names_one_series_or_a_selector_and_the_groups() -> None:
    request = query_request("m1", "daily", group_by=["site"])
    assert (request.series_id, request.HasField("selector"), list(request.group_by)) == (
        "m1",
        False,
        ["site"],
    )
    request = query_request(None, "weekly", series_ids=["m1", "m2"], labels={"site": "a"}, page_size=5)
    assert (request.series_id, list(request.selector.series_ids), dict(request.selector.labels)) == (
        "",
        ["m1", "m2"],
        {"site": "a"},
    )
    assert (request.granularity, request.page_size, list(request.group_by)) == (pb.GRANULARITY_WEEKLY, 5, [])
    request = query_request(None, "daily", labels={"site": "a"}, group_by=("customer", "series_id"))
    assert (list(request.selector.series_ids), list(request.group_by)) == ([], ["customer", "series_id"])
    # Exactly one of series_id and a selector; the service would refuse either mistake too.
    with pytest.raises(ValueError, match=r"^give series_id or a selector \(series_ids, labels\), not both"):
        query_request("m1", "daily", labels={"site": "a"})
    with pytest.raises(ValueError, match=r"^name the series to query"):
        query_request(None, "daily")
    with pytest.raises(ValueError, match=r"^name the series to query"):
        query_request(None, "daily", series_ids=[], labels={})
    with pytest.raises(TypeError, match="not one string"):
        query_request(None, "daily", series_ids="meter-1")
    with pytest.raises(TypeError, match="group_by takes a collection of label keys, not one string"):
        query_request("m1", "daily", group_by="site")


async def test_both_clients_refuse_a_bad_query_when_called_before_any_call() -> None:
    # No server listens on port 1: a call would fail with UNAVAILABLE, not ValueError. The
    # mistakes raise when query is called, before its buckets are iterated.
    async with AsyncTimeseriesClient("127.0.0.1:1", retry=QUICK_RETRIES) as client:
        with pytest.raises(ValueError, match=r"^give series_id or a selector"):
            client.query("m1", "daily", series_ids=["m2"])
        with pytest.raises(TypeError, match="not one string"):
            client.query(granularity="daily", series_ids="m1")
        with pytest.raises(TypeError, match=r"^query\(\) needs a granularity"):
            client.query(labels={"site": "a"})  # type: ignore[call-overload]
    with TimeseriesClient("127.0.0.1:1", retry=QUICK_RETRIES) as blocking:
        with pytest.raises(ValueError, match=r"^name the series to query"):
            blocking.query(granularity="daily", labels={})
        with pytest.raises(TypeError, match="group_by takes a collection"):
            blocking.query("m1", "daily", group_by="site")
        with pytest.raises(ValueError, match="granularity must be one of"):
            blocking.query(None, "fortnightly", labels={"site": "a"})


async def test_both_clients_query_a_selector_in_groups_with_series_counts_and_completeness(
    server: RunningServer,
) -> None:
    target = f"127.0.0.1:{server.port}"
    day = datetime(2025, 1, 1, tzinfo=UTC)
    hourly = timedelta(hours=1)
    whole_day: QueryOptions = {"start_time": day, "end_time": day + timedelta(days=1)}
    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        await client.update_series(
            "p1", labels={"site": "north", "customer": "acme"}, reading_interval=hourly
        )
        await client.update_series(
            "p2", labels={"site": "north", "customer": "zeta"}, reading_interval=hourly
        )
        await client.update_series("p3", labels={"site": "south", "customer": "acme"})  # no interval
        # p1 reads every hour of the day, p2 only 18 of them, p3 every hour without declaring it.
        await client.ingest(
            [Reading("p1", day + hour * hourly, 1.0) for hour in range(24)]
            + [Reading("p2", day + hour * hourly, 2.0) for hour in range(18)]
            + [Reading("p3", day + hour * hourly, 3.0) for hour in range(24)]
        )
        [north] = [b async for b in client.query(granularity="daily", labels={"site": "north"}, **whole_day)]
        by_customer = [
            b
            async for b in client.query(
                granularity="daily", labels={"site": "north"}, group_by=["customer"], **whole_day
            )
        ]
        by_series = [
            b
            async for b in client.query(
                None, "daily", series_ids=["p3", "p1"], group_by=["series_id"], page_size=1, start_time=day
            )
        ]
        [one] = [b async for b in client.query("p2", "daily", group_by=["site", "customer"], **whole_day)]
        entries = [entry async for entry in client.history(limit=4)]

    assert (north.total_quantity_kwh, north.reading_count, north.series_count) == (24 * 1.0 + 18 * 2.0, 42, 2)
    assert (north.group, north.expected_reading_count, north.completeness) == ({}, 48, 42 / 48)
    assert [(b.group, b.reading_count, b.expected_reading_count, b.completeness) for b in by_customer] == [
        ({"customer": "acme"}, 24, 24, 1.0),
        ({"customer": "zeta"}, 18, 24, 0.75),
    ]
    # Groups in the order of their values, across pages; nothing expected without an interval.
    assert [(b.group, b.total_quantity_kwh, b.series_count, b.completeness) for b in by_series] == [
        ({"series_id": "p1"}, 24.0, 1, 1.0),
        ({"series_id": "p3"}, 72.0, 1, None),
    ]
    assert (one.group, one.series_count, one.completeness) == ({"site": "north", "customer": "zeta"}, 1, 0.75)
    assert one.raw.group == {"site": "north", "customer": "zeta"}

    # The history keeps what named the series (ids as the service records them, sorted) and how
    # they were grouped, newest first.
    assert [(e.series_id, e.selector_series_ids, e.selector_labels, e.group_by) for e in entries] == [
        ("p2", (), {}, ("site", "customer")),
        ("", ("p1", "p3"), {}, ("series_id",)),  # one entry for its two pages
        ("", (), {"site": "north"}, ("customer",)),
        ("", (), {"site": "north"}, ()),
    ]

    def blocking() -> list[Bucket]:
        with TimeseriesClient(target, timeout_seconds=10) as client:
            return list(
                client.query(
                    granularity="daily",
                    series_ids=["p1", "p3"],
                    labels={"customer": "acme"},
                    group_by=["site"],
                    **whole_day,
                )
            )

    assert [(b.group, b.total_quantity_kwh, b.completeness) for b in await asyncio.to_thread(blocking)] == [
        ({"site": "north"}, 24.0, 1.0),
        ({"site": "south"}, 72.0, None),
    ]


class RefusingListener:
    """A port where something listens but no gRPC server answers: every connection is
    closed at once, and counted, so a test can wait until a client has tried."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @asynccontextmanager
    async def listening(self) -> AsyncIterator["RefusingListener"]:
        server = await asyncio.start_server(self._refuse, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


async def test_calls_are_retried_until_the_server_comes_up(database: Database) -> None:
    patient = RetryPolicy(max_attempts=60, initial_backoff_seconds=0.1, max_backoff_seconds=0.3)
    async with RefusingListener().listening() as refusing:
        port = refusing.port
        client = AsyncTimeseriesClient(f"127.0.0.1:{port}", timeout_seconds=5, retry=patient)
        early = asyncio.ensure_future(client.ingest([("r1", datetime(2025, 1, 1, tzinfo=UTC), 1.0)]))

        async def tried() -> None:
            assert refusing.connections >= 1

        await eventually(tried)
        assert not early.done()
    async with client, grpc_server(database, server_config(listen_address=f"127.0.0.1:{port}")):
        response = await early
        assert response.readings_received == 1
        assert [b.reading_count async for b in client.query("r1", "daily")] == [1]


def test_retry_policy_backs_off_exponentially_with_jitter() -> None:
    """Full jitter: the pause before retry n is uniform on [0, ceiling n], and the ceilings
    double up to the maximum. Over 2,000 draws a pause's mean lies within 10 % of half its
    ceiling (15 standard deviations), and the draws reach near both ends: pauses of zero, no
    jitter, or ceilings that do not grow all fail."""
    policy = RetryPolicy(max_attempts=5, initial_backoff_seconds=0.1, max_backoff_seconds=0.3)
    ceilings = [0.1, 0.2, 0.3, 0.3]
    draws = [list(policy.delays()) for _ in range(2_000)]
    assert {len(delays) for delays in draws} == {4}
    for position, ceiling in enumerate(ceilings):
        pauses = [delays[position] for delays in draws]
        assert all(0 <= pause <= ceiling for pause in pauses)
        assert sum(pauses) / len(pauses) == pytest.approx(ceiling / 2, rel=0.1)
        assert min(pauses) < 0.05 * ceiling
        assert max(pauses) > 0.95 * ceiling


def test_the_client_pauses_between_attempts() -> None:
    """20 retries with pauses uniform on [0, 0.1 s] take 1 s on average (a standard deviation
    of 0.13 s); a client that did not pause would be done in milliseconds."""
    policy = RetryPolicy(max_attempts=21, initial_backoff_seconds=0.1, max_backoff_seconds=0.1)
    # Nothing listens on port 1: every attempt fails UNAVAILABLE at once.
    with TimeseriesClient("127.0.0.1:1", timeout_seconds=5, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            list(client.history())
        elapsed = time.monotonic() - started
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 0.5 < elapsed < 5


class ConflictingService(pb_grpc.TimeseriesAggregationServiceServicer):
    """Answers its first ingest streams ABORTED, as the service does for a deadlock or a
    serialization failure (rolled back, safe to send again), then OK; records what each
    stream carried."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.streams: list[list[float]] = []

    async def IngestReadings(
        self, request_iterator: AsyncIterator[pb.IngestReadingsRequest], context: Context
    ) -> pb.IngestReadingsResponse:
        quantities = [
            quantity
            async for message in request_iterator
            for block in message.series_readings
            for quantity in block.quantity_kwh
        ]
        self.streams.append(quantities)
        if len(self.streams) <= self.conflicts:
            await context.abort(grpc.StatusCode.ABORTED, "deadlock detected; the stream was rolled back")
        return pb.IngestReadingsResponse(
            readings_received=len(quantities), messages_received=1, series_count=1
        )

    async def QueryAggregates(
        self, request: pb.QueryAggregatesRequest, context: Context
    ) -> pb.QueryAggregatesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def ListQueryHistory(
        self, request: pb.ListQueryHistoryRequest, context: Context
    ) -> pb.ListQueryHistoryResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def UpdateSeries(self, request: pb.UpdateSeriesRequest, context: Context) -> pb.Series:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def ListSeries(self, request: pb.ListSeriesRequest, context: Context) -> pb.ListSeriesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def DeleteReadings(
        self, request: pb.DeleteReadingsRequest, context: Context
    ) -> pb.DeleteReadingsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")


@asynccontextmanager
async def conflicting_server(conflicts: int) -> AsyncIterator[tuple[ConflictingService, str]]:
    """A real gRPC server on a free loopback port serving ConflictingService."""
    service = ConflictingService(conflicts)
    server = grpc.aio.server()
    pb_grpc.add_TimeseriesAggregationServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


READINGS = [Reading("c1", datetime(2025, 1, 1, hour, tzinfo=UTC), float(hour)) for hour in range(5)]


async def test_an_aborted_ingest_of_a_list_is_sent_again_whole() -> None:
    async with conflicting_server(conflicts=1) as (service, target):
        async with AsyncTimeseriesClient(target, retry=QUICK_RETRIES) as client:
            result = await client.ingest(READINGS, batch_size=2)
        assert result.readings_received == 5
        assert service.streams == [[0.0, 1.0, 2.0, 3.0, 4.0]] * 2

    async with conflicting_server(conflicts=1) as (service, target):

        def blocking() -> IngestResult:
            with TimeseriesClient(target, retry=QUICK_RETRIES) as client:
                return client.ingest(READINGS, batch_size=2)

        assert (await asyncio.to_thread(blocking)).readings_received == 5
        assert service.streams == [[0.0, 1.0, 2.0, 3.0, 4.0]] * 2


async def test_an_aborted_ingest_of_a_one_shot_iterator_is_not_sent_again() -> None:
    def once() -> Iterator[Reading]:
        yield from READINGS

    async with conflicting_server(conflicts=1) as (service, target):
        async with AsyncTimeseriesClient(target, retry=QUICK_RETRIES) as client:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.ingest(once(), batch_size=2)
        assert raised.value.code() == grpc.StatusCode.ABORTED
        assert len(service.streams) == 1

    async with conflicting_server(conflicts=1) as (service, target):

        def blocking() -> grpc.StatusCode:
            with TimeseriesClient(target, retry=QUICK_RETRIES) as client:
                try:
                    client.ingest(once(), batch_size=2)
                except grpc.RpcError as error:
                    return error.code()
            return grpc.StatusCode.OK

        assert await asyncio.to_thread(blocking) == grpc.StatusCode.ABORTED
        assert len(service.streams) == 1
