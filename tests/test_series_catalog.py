"""The series catalog: UpdateSeries and ListSeries, and the figures ingest keeps exact."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from bench.throwaway_databases import CitusCluster, throwaway_database
from tests.support import (
    batches,
    catalog_matches_readings,
    field_violations,
    hourly_readings,
    ingest,
    missing_series,
    reading,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.domain.series import make_selector
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.readings import COPY_CHUNK_READINGS
from timeseries_aggregation.storage.schema import apply_migrations, migration_scripts
from timeseries_aggregation.storage.series_catalog import list_series_statement

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


def update(series_id: str, paths: list[str] | None = None, **fields: object) -> pb.UpdateSeriesRequest:
    return pb.UpdateSeriesRequest(
        series=pb.Series(series_id=series_id, **fields),  # type: ignore[arg-type]
        update_mask=FieldMask(paths=paths or []),
    )


async def list_all(
    stub: Stub, selector: pb.SeriesSelector | None = None, page_size: int = 0
) -> list[pb.Series]:
    request = pb.ListSeriesRequest(selector=selector, page_size=page_size)
    found: list[pb.Series] = []
    while True:
        response = await stub.ListSeries(request)
        found.extend(response.series)
        if not response.next_page_token:
            return found
        request.page_token = response.next_page_token


async def one(stub: Stub, series_id: str) -> pb.Series:
    [series] = (
        await stub.ListSeries(pb.ListSeriesRequest(selector=pb.SeriesSelector(series_ids=[series_id])))
    ).series
    return series


async def figures(stub: Stub, series_id: str) -> tuple[str, str, int]:
    """First and last reading time (ISO, '' when absent) and the reading count, as listed."""
    series = await one(stub, series_id)
    first = series.first_reading_time.ToJsonString() if series.HasField("first_reading_time") else ""
    last = series.last_reading_time.ToJsonString() if series.HasField("last_reading_time") else ""
    return first, last, series.reading_count


async def test_ingest_creates_series_with_exact_figures(stub: Stub, sql: asyncpg.Connection) -> None:
    await ingest(
        stub, batches(hourly_readings("m1", "2025-01-01", 48) + hourly_readings("m2", "2025-03-01", 5), 10)
    )
    assert await figures(stub, "m1") == ("2025-01-01T00:00:00Z", "2025-01-02T23:00:00Z", 48)
    assert await figures(stub, "m2") == ("2025-03-01T00:00:00Z", "2025-03-01T04:00:00Z", 5)
    created = await one(stub, "m1")
    assert dict(created.labels) == {}
    assert not created.HasField("reading_interval")

    # Overwrites change no count; new readings before and after widen the range. The stream
    # repeats a key within itself and goes through the upsert path.
    resent = [
        *hourly_readings("m1", "2025-01-01", 48, 2.0),
        reading("m1", "2024-12-31T23:00:00", 1.0),
        reading("m1", "2025-01-05T00:00:00", 1.0),
        reading("m1", "2025-01-05T00:00:00", 3.0),
    ]
    await ingest(stub, batches(resent, 7))
    assert await figures(stub, "m1") == ("2024-12-31T23:00:00Z", "2025-01-05T00:00:00Z", 50)
    await catalog_matches_readings(sql)


async def test_figures_are_exact_across_chunks_and_paths(stub: Stub, sql: asyncpg.Connection) -> None:
    # More than a COPY chunk of new readings, then a stream that overwrites half of them and
    # adds as many new ones: the second stream's later chunks take the upsert path.
    hours = COPY_CHUNK_READINGS // 2 + 500
    first = [*hourly_readings("a", "2024-01-01", hours), *hourly_readings("b", "2024-01-01", hours)]
    await ingest(stub, batches(first, 5_000))
    second = [
        *hourly_readings("a", "2030-01-01", hours),
        *hourly_readings("a", "2024-01-01", hours // 2, 5.0),
    ]
    await ingest(stub, batches(second, 5_000))
    await catalog_matches_readings(sql)
    assert (await figures(stub, "a"))[2] == 2 * hours
    assert (await figures(stub, "b"))[2] == hours


async def test_a_failed_stream_leaves_the_catalog_as_it_was(stub: Stub, sql: asyncpg.Connection) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 10), 10))
    before = await list_all(stub)
    invalid = pb.IngestReadingsRequest(readings=[reading("m1", "2025-02-01", math.nan)])
    stream = [*batches(hourly_readings("m1", "2025-06-01", COPY_CHUNK_READINGS + 10), 5_000), invalid]
    stream += batches(hourly_readings("new-meter", "2025-01-01", 3), 10)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, stream)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await list_all(stub) == before
    await catalog_matches_readings(sql)


async def test_concurrent_streams_of_one_series_add_up(stub: Stub, sql: asyncpg.Connection) -> None:
    async def stream(day: int) -> None:
        await ingest(stub, batches(hourly_readings("shared", f"2025-01-{day:02}", 24), 6))

    # Fewer streams than the write pool holds: each waits at its catalog row for the one before
    # to commit, and on a slow cluster more would wait for a connection longer than allowed.
    await asyncio.gather(*(stream(day) for day in range(1, 11)))
    assert await figures(stub, "shared") == ("2025-01-01T00:00:00Z", "2025-01-10T23:00:00Z", 240)
    await catalog_matches_readings(sql)


async def test_update_series_creates_sets_and_clears_by_mask(stub: Stub) -> None:
    created = await stub.UpdateSeries(
        update(
            "site-meter",
            labels={"site": "berlin-01", "customer": "acme"},
            reading_interval=Duration(seconds=900),
        )
    )
    assert created.series_id == "site-meter"
    assert dict(created.labels) == {"site": "berlin-01", "customer": "acme"}
    assert created.reading_interval.seconds == 900
    assert created.reading_count == 0
    assert not created.HasField("first_reading_time")

    # Only labels: the interval stays. Labels are replaced as a whole.
    relabelled = await stub.UpdateSeries(update("site-meter", ["labels"], labels={"site": "hamburg-02"}))
    assert dict(relabelled.labels) == {"site": "hamburg-02"}
    assert relabelled.reading_interval.seconds == 900

    # Only the interval, absent from the message: cleared; labels stay.
    cleared = await stub.UpdateSeries(update("site-meter", ["reading_interval"]))
    assert not cleared.HasField("reading_interval")
    assert dict(cleared.labels) == {"site": "hamburg-02"}

    # Empty mask: the fields populated in the request, here the interval; labels stay.
    implied = await stub.UpdateSeries(update("site-meter", reading_interval=Duration(seconds=1_800)))
    assert implied.reading_interval.seconds == 1_800
    assert dict(implied.labels) == {"site": "hamburg-02"}
    # Nothing populated, no mask: nothing changes (and an unknown series would be created).
    assert await stub.UpdateSeries(update("site-meter")) == implied
    # Both in the mask, both empty: both cleared.
    emptied = await stub.UpdateSeries(update("site-meter", ["labels", "reading_interval"]))
    assert dict(emptied.labels) == {}
    assert not emptied.HasField("reading_interval")
    assert await one(stub, "site-meter") == emptied


async def test_update_series_keeps_the_figures_of_ingested_readings(stub: Stub) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 3), 3))
    # Output-only fields in the request are ignored.
    updated = await stub.UpdateSeries(update("m1", labels={"site": "x"}, reading_count=999))
    assert updated.reading_count == 3
    assert updated.first_reading_time == ts("2025-01-01")
    assert updated.last_reading_time == ts("2025-01-01T02:00:00")
    await ingest(stub, batches(hourly_readings("m1", "2025-01-02", 2), 3))
    series = await one(stub, "m1")
    assert dict(series.labels) == {"site": "x"}
    assert series.reading_count == 5


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (update(""), "series.series_id"),
        (update("x" * 129), "series.series_id"),
        (update("m", labels={"Site": "a"}), "series.labels['Site']"),
        (update("m", labels={"1site": "a"}), "series.labels['1site']"),
        (update("m", labels={"s" * 64: "a"}), f"series.labels['{'s' * 64}']"),
        (update("m", labels={"site": "a" * 256}), "series.labels['site']"),
        (update("m", labels={"site": "a\nb"}), "series.labels['site']"),
        (update("   "), "series.series_id"),
        (update("m", labels={"series_id": "m2"}), "series.labels['series_id']"),
        (update("m", labels={f"k{i}": "v" for i in range(65)}), "series.labels"),
        (update("m", reading_interval=Duration(seconds=0)), "series.reading_interval"),
        (update("m", reading_interval=Duration(seconds=-900)), "series.reading_interval"),
        (update("m", reading_interval=Duration(seconds=86_401)), "series.reading_interval"),
        (update("m", reading_interval=Duration(seconds=1, nanos=500)), "series.reading_interval"),
        (update("m", ["labels", "reading_count"]), "update_mask.paths[1]"),
    ],
)
async def test_update_series_rejects_bad_fields_and_stores_nothing(
    stub: Stub, request_: pb.UpdateSeriesRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateSeries(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]
    assert await list_all(stub) == []


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (update("   ", labels={"site": "a"}), "series.series_id: is blank (only spaces)"),
        (
            update("m", labels={"site": "berlin\u200b"}),
            "series.labels['site']: holds an invisible format character U+200B (ZERO WIDTH SPACE)",
        ),
        (
            update("m", labels={"series_id": "m2", "site": "a"}),
            "series.labels['series_id']: is a reserved key: 'series_id' means the series' own id",
        ),
    ],
    ids=["blank-id", "zero-width-space", "series-id-label"],
)
async def test_update_series_says_what_is_wrong(
    stub: Stub, request_: pb.UpdateSeriesRequest, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateSeries(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(words)
    assert await list_all(stub) == []


async def test_a_selector_cannot_name_the_reserved_label_key(stub: Stub) -> None:
    request = pb.ListSeriesRequest(selector=pb.SeriesSelector(labels={"series_id": "m1"}))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListSeries(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["selector.labels['series_id']"]
    assert "pick series by id with series_ids" in (raised.value.details() or "")


async def test_list_series_selects_by_id_and_label_and_pages_in_code_point_order(stub: Stub) -> None:
    names = ["b-2", "B-1", "a-10", "a-9", "Ä", "z"]
    for name in names:
        await stub.UpdateSeries(update(name, labels={"site": "s1" if name < "b" else "s2", "kind": "meter"}))
    assert [series.series_id for series in await list_all(stub)] == sorted(names)
    assert [series.series_id for series in await list_all(stub, page_size=2)] == sorted(names)

    by_label = pb.SeriesSelector(labels={"site": "s2", "kind": "meter"})
    assert [series.series_id for series in await list_all(stub, by_label, page_size=1)] == ["b-2", "z", "Ä"]
    by_both = pb.SeriesSelector(series_ids=["z", "a-9"], labels={"site": "s2"})
    assert [series.series_id for series in await list_all(stub, by_both)] == ["z"]
    assert await list_all(stub, pb.SeriesSelector(labels={"site": "nowhere"})) == []


async def test_listing_a_series_id_not_in_the_catalog_is_not_found(stub: Stub) -> None:
    await stub.UpdateSeries(update("z", labels={"site": "s2"}))
    selector = pb.SeriesSelector(series_ids=["z", "unknown"], labels={"site": "s2"})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_all(stub, selector)
    assert (raised.value.details() or "").startswith(
        "selector.series_ids: series 'unknown' is not in the catalog"
    )
    assert missing_series(raised.value) == ["unknown"]


async def test_a_page_token_belongs_to_its_selector(stub: Stub) -> None:
    for name in ("a", "b", "c"):
        await stub.UpdateSeries(update(name, labels={"site": "s"}))
    first = await stub.ListSeries(
        pb.ListSeriesRequest(page_size=1, selector=pb.SeriesSelector(labels={"site": "s"}))
    )
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListSeries(pb.ListSeriesRequest(page_token=first.next_page_token))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["page_token"]
    for token in ("garbage", first.next_page_token[:-3]):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListSeries(pb.ListSeriesRequest(page_token=token))
        assert field_violations(raised.value) == ["page_token"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListSeriesRequest(page_size=-1), "page_size"),
        (pb.ListSeriesRequest(selector=pb.SeriesSelector(series_ids=[""])), "selector.series_ids[0]"),
        (pb.ListSeriesRequest(selector=pb.SeriesSelector(series_ids=["m"] * 1001)), "selector.series_ids"),
        (pb.ListSeriesRequest(selector=pb.SeriesSelector(labels={"Bad": "x"})), "selector.labels['Bad']"),
    ],
)
async def test_list_series_rejects_bad_fields(stub: Stub, request_: pb.ListSeriesRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListSeries(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]


@pytest.mark.parametrize("series_ids", [(), ("m1", "m2")], ids=["all", "by-id"])
async def test_listing_series_reads_no_readings(
    stub: Stub, database: Database, series_ids: tuple[str, ...]
) -> None:
    await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 3), 3))
    selector = make_selector(series_ids, {"site": "x"})
    for after in (None, "m0"):
        sql, arguments = list_series_statement(selector, PageRequest(1_000, after))
        async with database.query_connection() as connection:
            plan = "\n".join(row[0] for row in await connection.fetch("EXPLAIN " + sql, *arguments))
        assert "series" in plan
        assert "readings" not in plan


async def test_series_created_concurrently_by_update_and_ingest(stub: Stub, sql: asyncpg.Connection) -> None:
    await asyncio.gather(
        stub.UpdateSeries(update("m1", labels={"site": "x"})),
        ingest(stub, batches(hourly_readings("m1", "2025-01-01", 24), 6)),
    )
    series = await one(stub, "m1")
    assert dict(series.labels) == {"site": "x"}
    assert series.reading_count == 24
    await catalog_matches_readings(sql)


async def test_upgrading_fills_the_catalog_from_the_readings_already_stored(
    postgres_url: str, citus_cluster: CitusCluster | None
) -> None:
    name = f"timeseries_upgrade_{uuid.uuid4().hex[:12]}"
    async with throwaway_database(postgres_url, name, citus_cluster) as url:
        connection = await asyncpg.connect(url)
        try:
            # The schema as it was before the catalog, with readings of two meters.
            await connection.execute(
                "CREATE TABLE schema_migrations"
                " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, script in migration_scripts():
                if version >= "0007":
                    break
                await connection.execute(script)
                await connection.execute("INSERT INTO schema_migrations VALUES ($1)", version)
            await connection.execute(
                "INSERT INTO readings"
                " SELECT 'old-' || m, timestamptz '2025-01-01' + h * interval '1 hour', 1.0"
                " FROM generate_series(1, 2) AS m, generate_series(0, 9 * m) AS h"
            )
            applied = await apply_migrations(connection)
            assert "0007_series_catalog" in applied
            rows = await connection.fetch(
                "SELECT series_id, labels::text, reading_count, first_reading_time, last_reading_time "
                "FROM series ORDER BY series_id"
            )
            assert [tuple(row) for row in rows] == [
                ("old-1", "{}", 10, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 9, tzinfo=UTC)),
                ("old-2", "{}", 19, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 18, tzinfo=UTC)),
            ]
        finally:
            await connection.close()
