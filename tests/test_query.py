"""QueryAggregates: statistics, time zones, validation and keyset paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest

from tests.support import (
    batches,
    field_violations,
    hourly_readings,
    ingest,
    missing_series,
    query_all_pages,
    reading,
    ts,
    writing_by_hand,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.rollups import check_series_rollups, rebuild_series_rollups

if TYPE_CHECKING:
    import asyncpg

    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

HOURLY = pb.GRANULARITY_HOURLY
DAILY = pb.GRANULARITY_DAY_OF_MONTH
MONTHLY = pb.GRANULARITY_MONTHLY


async def test_statistics_of_varied_readings(stub: Stub) -> None:
    values = [1.5, -0.5, 4.0, 10.0]
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[reading("m1", f"2025-02-03T{hour:02d}:15", q) for hour, q in enumerate(values)]
            )
        ],
    )
    response = await stub.QueryAggregates(pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY))
    [bucket] = response.buckets
    assert bucket.total_quantity_kwh == 15.0
    assert bucket.min_quantity_kwh == -0.5
    assert bucket.max_quantity_kwh == 10.0
    assert bucket.mean_quantity_kwh == 3.75
    assert bucket.reading_count == 4
    hourly = await stub.QueryAggregates(pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY))
    assert [b.period for b in hourly.buckets] == [f"2025-02-03T{h:02d}:00" for h in range(4)]
    assert hourly.buckets[0].start_time == ts("2025-02-03T00:00")
    assert hourly.buckets[0].end_time == ts("2025-02-03T01:00")


async def test_range_is_start_inclusive_end_exclusive(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 72), 100))
    response = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            series_id="m1",
            granularity=DAILY,
            start_time=ts("2025-01-01T12:00"),
            end_time=ts("2025-01-02T12:00"),
        )
    )
    assert [(b.period, b.reading_count) for b in response.buckets] == [
        ("2025-01-01", 12),
        ("2025-01-02", 12),
    ]
    # A bucket cut by the range keeps its calendar bounds.
    assert response.buckets[0].start_time == ts("2025-01-01T00:00")


async def test_a_known_series_without_readings_in_range_returns_no_buckets(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 24), 100))
    await stub.UpdateSeries(pb.UpdateSeriesRequest(series=pb.Series(series_id="declared", labels={"a": "b"})))
    for request in [
        pb.QueryAggregatesRequest(series_id="declared", granularity=DAILY),
        pb.QueryAggregatesRequest(
            series_id="m1", granularity=DAILY, start_time=ts("2026-01-01"), end_time=ts("2026-02-01")
        ),
    ]:
        response = await stub.QueryAggregates(request)
        assert list(response.buckets) == []
        assert response.next_page_token == ""


@pytest.mark.parametrize(
    "options",
    [{}, {"group_by": ["series_id"]}, {"include_empty_buckets": True}],
    ids=["one-series", "grouped", "empty-buckets"],
)
async def test_an_unknown_series_is_not_found_and_not_recorded(
    stub: Stub, options: dict[str, object]
) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 24), 100))
    request = pb.QueryAggregatesRequest(series_id="no-such-meter", granularity=DAILY, **options)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert (raised.value.details() or "").startswith(
        "series_id: series 'no-such-meter' is not in the catalog"
    )
    assert missing_series(raised.value) == ["no-such-meter"]
    history = await stub.ListQueryHistory(pb.ListQueryHistoryRequest())
    assert list(history.entries) == []


async def test_a_continued_page_of_a_series_gone_from_the_catalog_is_not_found(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 72), 100))
    request = pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, page_size=1)
    first = await stub.QueryAggregates(request)
    # No call removes a series from the catalog; by hand, its next page cannot go on.
    await sql.execute("DELETE FROM series WHERE series_id = 'm1'")
    request.page_token = first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(request)
    assert missing_series(raised.value) == ["m1"]


async def test_hourly_buckets_keep_both_hours_of_a_dst_fall_back(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-10-25T22:00", 26), 100))
    response = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY, time_zone="Europe/Berlin")
    )
    periods = [b.period for b in response.buckets]
    assert len(periods) == 26
    assert periods.count("2025-10-26T02:00") == 2
    assert periods[0] == "2025-10-26T00:00"
    assert periods[-1] == "2025-10-27T00:00"
    daily = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, time_zone="Europe/Berlin")
    )
    assert [(b.period, b.reading_count) for b in daily.buckets] == [("2025-10-26", 25), ("2025-10-27", 1)]
    assert daily.buckets[0].end_time == ts("2025-10-26T23:00")


async def test_half_hour_zone_hours_start_at_local_top_of_the_hour(stub: Stub) -> None:
    await ingest(stub, [pb.IngestReadingsRequest(readings=[reading("m1", "2025-01-01T00:00", 1)])])
    response = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY, time_zone="Asia/Kolkata")
    )
    [bucket] = response.buckets
    assert bucket.period == "2025-01-01T05:00"
    assert bucket.start_time == ts("2024-12-31T23:30")
    monthly = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=MONTHLY, time_zone="America/New_York")
    )
    assert monthly.buckets[0].period == "2024-12"
    assert monthly.buckets[0].start_time == ts("2024-12-01T05:00")
    assert monthly.buckets[0].end_time == ts("2025-01-01T05:00")


INVALID_QUERIES = [
    (pb.QueryAggregatesRequest(granularity=DAILY), "series_id"),
    (pb.QueryAggregatesRequest(series_id="x" * 200, granularity=DAILY), "series_id"),
    (pb.QueryAggregatesRequest(series_id="m1"), "granularity"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=42), "granularity"),  # type: ignore[arg-type]
    (
        pb.QueryAggregatesRequest(
            series_id="m1", granularity=DAILY, start_time=ts("2025-02-01"), end_time=ts("2025-02-01")
        ),
        "start_time",
    ),
    (
        pb.QueryAggregatesRequest(
            series_id="m1", granularity=DAILY, start_time=ts("2025-03-01"), end_time=ts("2025-02-01")
        ),
        "start_time",
    ),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, start_time=ts("1900-01-01")), "start_time"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, end_time=ts("2200-01-01")), "end_time"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, time_zone="Mars/Olympus"), "time_zone"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, time_zone="../etc/passwd"), "time_zone"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, page_size=-1), "page_size"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, page_token="not a token"), "page_token"),
    (pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, page_token="eyJ2IjoxfQ"), "page_token"),
]


@pytest.mark.parametrize(("request_message", "field"), INVALID_QUERIES)
async def test_invalid_query_names_the_field_and_is_not_recorded(
    stub: Stub, request_message: pb.QueryAggregatesRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(request_message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(field + ":")
    assert field_violations(raised.value) == [field]
    history = await stub.ListQueryHistory(pb.ListQueryHistoryRequest())
    assert list(history.entries) == []


async def test_end_time_at_the_end_of_the_supported_range_is_accepted(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 1), 1))
    response = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, end_time=ts("2100-01-01"))
    )
    assert [bucket.reading_count for bucket in response.buckets] == [1]


async def test_pages_concatenate_to_the_whole_answer(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 24 * 10), 100))
    whole = await stub.QueryAggregates(pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY))
    assert len(whole.buckets) == 240
    assert whole.next_page_token == ""
    for page_size in (1, 7, 239, 240):
        pages = await query_all_pages(
            stub, pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY, page_size=page_size)
        )
        assert pages == list(whole.buckets)


async def test_exact_last_page_has_no_next_token(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 48), 100))
    first = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, page_size=1)
    )
    assert first.next_page_token
    second = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            series_id="m1", granularity=DAILY, page_size=1, page_token=first.next_page_token
        )
    )
    assert [b.period for b in second.buckets] == ["2025-01-02"]
    assert second.next_page_token == ""


async def test_readings_inserted_between_pages_never_duplicate_or_drop_a_bucket(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-02", 24 * 4), 100))  # days 2..5
    request = pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY, page_size=2)
    first = await stub.QueryAggregates(request)
    assert [b.period for b in first.buckets] == ["2025-01-02", "2025-01-03"]
    # Between pages: a day before the cursor, a reading inside a returned day, a day after the end.
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[
                    reading("m1", "2025-01-01T05:00", 1),
                    reading("m1", "2025-01-03T05:30", 1),
                    reading("m1", "2025-01-08T00:00", 1),
                ]
            )
        ],
    )
    request.page_token = first.next_page_token
    rest = await query_all_pages(stub, request)
    assert [b.period for b in rest] == ["2025-01-04", "2025-01-05", "2025-01-08"]


async def test_token_is_bound_to_the_query_parameters(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 48), 100))
    await ingest(stub, batches(hourly_readings("m2", "2025-01-01", 48), 100))
    base = pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY, page_size=5)
    token = (await stub.QueryAggregates(base)).next_page_token
    variants: list[dict[str, object]] = [
        {"series_id": "m2"},
        {"granularity": DAILY},
        {"time_zone": "Europe/Berlin"},
        {"start_time": ts("2025-01-01")},
        {"end_time": ts("2025-02-01")},
    ]
    for change in variants:
        other = pb.QueryAggregatesRequest()
        other.CopyFrom(base)
        for name, value in change.items():
            if name.endswith("_time"):
                getattr(other, name).CopyFrom(value)
            else:
                setattr(other, name, value)
        other.page_token = token
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryAggregates(other)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, change
        assert field_violations(raised.value) == ["page_token"]
    # A different page size is allowed with the same token.
    base.page_token = token
    base.page_size = 50
    response = await stub.QueryAggregates(base)
    assert response.buckets[0].period == "2025-01-01T05:00"
    # A history token is not a buckets token.
    await stub.QueryAggregates(pb.QueryAggregatesRequest(series_id="m1", granularity=DAILY))
    history_token = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=1))).next_page_token
    assert history_token
    base.page_token = history_token
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(base)
    assert field_violations(raised.value) == ["page_token"]


async def test_page_size_default_and_maximum(stub: Stub) -> None:
    readings = hourly_readings("m1", "2024-01-01", 12_000)
    await ingest(stub, batches(readings, 6_000))
    default = await stub.QueryAggregates(pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY))
    assert len(default.buckets) == 1_000
    assert default.next_page_token
    coerced = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY, page_size=1_000_000)
    )
    assert len(coerced.buckets) == 10_000
    assert coerced.next_page_token
    history = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=1))
    assert history.entries[0].page_size == 10_000


async def test_hourly_labels_skip_the_missing_hour_of_a_dst_spring_forward(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-03-29T23:00", 4), 100))
    response = await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="m1", granularity=HOURLY, time_zone="Europe/Berlin")
    )
    assert [b.period for b in response.buckets] == [
        "2025-03-30T00:00",
        "2025-03-30T01:00",
        "2025-03-30T03:00",
        "2025-03-30T04:00",
    ]
    assert [b.end_time.seconds - b.start_time.seconds for b in response.buckets] == [3600] * 4


def answers(buckets: list[pb.Bucket]) -> list[tuple[str, str, str, float, float, int]]:
    """Buckets as comparable rows: totals and means by repr, so NaN equals NaN."""
    return [
        (
            b.period,
            repr(b.total_quantity_kwh),
            repr(b.mean_quantity_kwh),
            b.min_quantity_kwh,
            b.max_quantity_kwh,
            b.reading_count,
        )
        for b in buckets
    ]


@pytest.mark.parametrize(
    ("legacy", "zone"),
    [
        ([1.7e308, 1.7e308], "UTC"),
        ([1.7e308, 1.7e308], "Europe/Berlin"),
        ([1.7e308, 1.7e308], "Asia/Kolkata"),
        ([1.7e308, 1.7e308, -1.7e308, -1.7e308], "UTC"),
        ([5e12], "Europe/Berlin"),
    ],
)
async def test_readings_stored_beyond_the_bound_answer_nan_on_every_path(
    stub: Stub, sql: asyncpg.Connection, database: Database, legacy: list[float], zone: str
) -> None:
    # A quarter-hourly meter (so rolled up), whose hour 2025-01-02T10:00Z holds readings an
    # older version accepted; its rollups hold what that version's ingest made of them (numpy's
    # sum: inf where the readings overflow a double).
    series_id = f"legacy-{len(legacy)}-{zone}"
    first = datetime(2025, 1, 1, tzinfo=UTC)
    quarter_hours = pb.SeriesReadings(
        series_id=series_id,
        time_unix_micros=[int((first + timedelta(minutes=15 * n)).timestamp() * 1e6) for n in range(4 * 72)],
        quantity_kwh=[1.0] * (4 * 72),
    )
    await ingest(stub, [pb.IngestReadingsRequest(series_readings=[quarter_hours])])
    hour = datetime(2025, 1, 2, 10, tzinfo=UTC)
    async with writing_by_hand(sql):
        for minutes, value in zip((0, 15, 30, 45), legacy, strict=False):
            await sql.execute(
                "UPDATE readings SET quantity_kwh = $3 WHERE series_id = $1 AND time = $2",
                series_id,
                hour + timedelta(minutes=minutes),
                value,
            )
    stored = [*legacy, *[1.0] * (4 - len(legacy))]
    with np.errstate(over="ignore"):
        old_total = float(np.add.reduce(np.array(stored)))
    # The day's other 92 readings are 1 kWh each.
    for table, start, others in (("hourly_rollups", hour, 0), ("daily_rollups", hour.replace(hour=0), 92)):
        await sql.execute(
            f"UPDATE {table} SET total = $3, minimum = $4, maximum = $5 "
            "WHERE series_id = $1 AND bucket_start = $2",
            series_id,
            start,
            old_total + others,
            min(stored),
            max(stored),
        )
    for granularity in (HOURLY, DAILY, MONTHLY):
        request = pb.QueryAggregatesRequest(series_id=series_id, granularity=granularity, time_zone=zone)
        # The first query of a series reads its readings; from the second on, its rollups.
        from_readings = answers(await query_all_pages(stub, request))
        from_rollups = answers(await query_all_pages(stub, request))
        selected = pb.QueryAggregatesRequest(
            selector=pb.SeriesSelector(series_ids=[series_id]), granularity=granularity, time_zone=zone
        )
        portfolio = answers(await query_all_pages(stub, selected))
        assert from_readings == from_rollups == portfolio
        held = [row for row in from_readings if row[4] >= 5e12 or row[3] <= -5e12]
        assert held
        assert all(row[1] == row[2] == "nan" for row in held)
        untouched = [row for row in from_readings if row not in held]
        assert all(row[1] == repr(float(row[5])) for row in untouched)
    # Rollups made again from such readings (an hour an upsert rewrote, a rebuild, a check)
    # leave them out of the hour's sum instead of failing.
    rewrite = [reading(series_id, first, 1.0), reading(series_id, hour + timedelta(minutes=7), 1.0)]
    assert (await ingest(stub, [pb.IngestReadingsRequest(readings=rewrite)])).readings_received == 2
    assert await rebuild_series_rollups(database, series_id)
    assert await check_series_rollups(database, series_id) is not None
    request = pb.QueryAggregatesRequest(series_id=series_id, granularity=HOURLY, time_zone=zone)
    assert any(row[1] == "nan" for row in answers(await query_all_pages(stub, request)))
