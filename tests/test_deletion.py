"""DeleteReadings: the selected series' readings in a range go, atomically, and the catalog
follows in the same transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from tests.support import (
    batches,
    catalog_matches_readings,
    compress_every_chunk,
    eventually,
    field_violations,
    hourly_readings,
    ingest,
    missing_series,
    reading,
    service_transactions_waiting,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.api_keys import Scope, parse_scopes
from timeseries_aggregation.storage.database import Database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


def deletion(start: str, end: str, *series_ids: str, **labels: str) -> pb.DeleteReadingsRequest:
    return pb.DeleteReadingsRequest(
        selector=pb.SeriesSelector(series_ids=series_ids, labels=labels),
        start_time=ts(start),
        end_time=ts(end),
    )


async def counts(sql: asyncpg.Connection) -> dict[str, tuple[int, str | None, str | None]]:
    """Each series' reading count, first and last reading time, as the catalog holds them."""
    rows = await sql.fetch("SELECT * FROM series ORDER BY series_id")
    return {
        row["series_id"]: (
            row["reading_count"],
            row["first_reading_time"] and row["first_reading_time"].isoformat(),
            row["last_reading_time"] and row["last_reading_time"].isoformat(),
        )
        for row in rows
    }


async def load_three_meters(stub: Stub) -> None:
    """Three meters of 48 hours from 2025-01-01; a and b on site s1, c on s2."""
    for series_id, site in (("a", "s1"), ("b", "s1"), ("c", "s2")):
        await stub.UpdateSeries(
            pb.UpdateSeriesRequest(series=pb.Series(series_id=series_id, labels={"site": site}))
        )
        await ingest(stub, batches(hourly_readings(series_id, "2025-01-01", 48), 48))


async def test_deleting_a_range_of_one_meter_updates_its_figures_and_keeps_it(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await load_three_meters(stub)
    # The first day of a: the meter now starts on the second day.
    response = await stub.DeleteReadings(deletion("2025-01-01", "2025-01-02", "a"))
    assert response.deleted_count == 24
    # The middle of b: its first and last reading stay.
    assert (
        await stub.DeleteReadings(deletion("2025-01-01T10:00", "2025-01-01T20:00", "b"))
    ).deleted_count == 10
    assert await counts(sql) == {
        "a": (24, "2025-01-02T00:00:00+00:00", "2025-01-02T23:00:00+00:00"),
        "b": (38, "2025-01-01T00:00:00+00:00", "2025-01-02T23:00:00+00:00"),
        "c": (48, "2025-01-01T00:00:00+00:00", "2025-01-02T23:00:00+00:00"),
    }
    # Everything of a: the series stays, with its labels and no readings.
    assert (await stub.DeleteReadings(deletion("2020-01-01", "2030-01-01", "a"))).deleted_count == 24
    [series] = (
        await stub.ListSeries(pb.ListSeriesRequest(selector=pb.SeriesSelector(series_ids=["a"])))
    ).series
    assert (series.reading_count, dict(series.labels)) == (0, {"site": "s1"})
    assert not series.HasField("first_reading_time")
    assert not series.HasField("last_reading_time")
    await catalog_matches_readings(sql)


async def test_a_label_selector_deletes_only_its_series(stub: Stub, sql: asyncpg.Connection) -> None:
    await load_three_meters(stub)
    response = await stub.DeleteReadings(deletion("2025-01-02", "2025-01-03", site="s1"))
    assert (response.deleted_count, response.series_count) == (48, 2)
    assert {series_id: count for series_id, (count, _, _) in (await counts(sql)).items()} == {
        "a": 24,
        "b": 24,
        "c": 48,
    }
    # Ids and labels together: both must match; nothing matching deletes nothing.
    assert (
        await stub.DeleteReadings(deletion("2025-01-01", "2025-01-03", "c", site="s1"))
    ).deleted_count == 0
    matching_nothing = await stub.DeleteReadings(deletion("2025-01-01", "2025-01-03", site="nowhere"))
    assert (matching_nothing.deleted_count, matching_nothing.series_count) == (0, 0)
    await catalog_matches_readings(sql)


async def test_a_series_not_in_the_catalog_is_not_found_and_nothing_is_deleted(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await load_three_meters(stub)
    for request in (
        deletion("2025-01-01", "2025-01-03", "no-such"),
        deletion("2025-01-01", "2025-01-03", "a", "no-such", "c"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DeleteReadings(request)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert (raised.value.details() or "").startswith(
            "selector.series_ids: series 'no-such' is not in the catalog"
        )
        assert missing_series(raised.value) == ["no-such"]
    assert await sql.fetchval("SELECT count(*) FROM readings") == 3 * 48
    await catalog_matches_readings(sql)


async def test_a_deletion_in_compressed_chunks_keeps_the_catalog_exact(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    await ingest(stub, batches(hourly_readings("m", "2025-01-01", 24 * 60), 5_000))
    await compress_every_chunk(sql)  # a no-op where the engine does not compress
    response = await stub.DeleteReadings(deletion("2025-01-10", "2025-02-10", "m"))
    assert response.deleted_count == 31 * 24
    await catalog_matches_readings(sql)
    assert (await counts(sql))["m"][0] == 24 * 60 - 31 * 24


async def test_a_failing_deletion_removes_nothing(
    stub: Stub, sql: asyncpg.Connection, database: Database
) -> None:
    if not database.capabilities.triggers_on_readings:
        pytest.skip("the failure is injected with a trigger, which Citus keeps off distributed tables")
    await load_three_meters(stub)
    before = await counts(sql)
    # The last series of the deletion (in series_id order) fails to update its catalog row.
    await sql.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
        CREATE TRIGGER refuse_c BEFORE UPDATE ON series FOR EACH ROW
        WHEN (OLD.series_id = 'c') EXECUTE FUNCTION refuse();
        """
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DeleteReadings(deletion("2025-01-01", "2025-01-03", "a", "b", "c"))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert await counts(sql) == before
    assert await sql.fetchval("SELECT count(*) FROM readings") == 3 * 48
    await sql.execute("DROP TRIGGER refuse_c ON series")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.DeleteReadingsRequest(start_time=ts("2025-01-01"), end_time=ts("2025-01-02")), "selector"),
        (
            pb.DeleteReadingsRequest(
                selector=pb.SeriesSelector(), start_time=ts("2025-01-01"), end_time=ts("2025-01-02")
            ),
            "selector",
        ),
        (
            pb.DeleteReadingsRequest(selector=pb.SeriesSelector(series_ids=["a"]), end_time=ts("2025-01-02")),
            "start_time",
        ),
        (
            pb.DeleteReadingsRequest(
                selector=pb.SeriesSelector(series_ids=["a"]), start_time=ts("2025-01-02")
            ),
            "end_time",
        ),
        (deletion("2025-01-02", "2025-01-01", "a"), "start_time"),
        (deletion("2025-01-01", "2025-01-02", ""), "selector.series_ids[0]"),
        (deletion("2025-01-01", "2025-01-02", Bad="x"), "selector.labels['Bad']"),
        (deletion("1960-01-01", "2025-01-02", "a"), "start_time"),
    ],
)
async def test_bad_deletions_name_the_field_and_delete_nothing(
    stub: Stub, sql: asyncpg.Connection, request_: pb.DeleteReadingsRequest, field: str
) -> None:
    await ingest(stub, batches(hourly_readings("a", "2025-01-01", 48), 48))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DeleteReadings(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]
    assert await sql.fetchval("SELECT count(*) FROM readings") == 48


async def test_each_deletion_is_logged_with_what_it_removed(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    await load_three_meters(stub)
    caplog.set_level(logging.INFO, logger="timeseries_aggregation.transport.servicer")
    await stub.DeleteReadings(deletion("2025-01-01", "2025-01-02", "a", site="s1"))
    [record] = [record for record in caplog.records if "deleted" in record.getMessage()]
    message = record.getMessage()
    assert "deleted 24 readings of 1 series" in message
    assert "['a']" in message
    assert "'site': 's1'" in message
    assert "2025-01-01T00:00:00+00:00" in message


def test_keys_can_carry_the_delete_scope() -> None:
    assert parse_scopes("ingest,delete") == {Scope.INGEST, Scope.DELETE}


async def _a_call_waits_on_a_lock(sql: asyncpg.Connection) -> None:
    waiting = await sql.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    assert waiting > 0


@pytest.mark.parametrize("then", ["elsewhere", "back to the range"])
async def test_a_deletion_and_a_stream_rewriting_its_range_both_succeed(
    stub: Stub, sql: asyncpg.Connection, then: str
) -> None:
    # A stream rewrites a meter's stored readings (its row locks held while it waits for its
    # next message) when a deletion of that range comes; then the stream writes elsewhere, or
    # comes back to the range in a second chunk. The deletion waits for the stream, and the
    # stream must never wait for the deletion: not at its catalog update, nor for rows the
    # deletion deleted before it reached the stream's.
    await ingest(stub, batches(hourly_readings("m", "2025-01-01", 20_500, quantity_kwh=1.0), 5000))
    release = asyncio.Event()
    later = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=500)
    second = (
        hourly_readings("m", "2030-01-01", 1, quantity_kwh=3.0)
        if then == "elsewhere"
        else hourly_readings("m", "2025-01-01", 500, quantity_kwh=3.0)
    )

    async def rewriting() -> AsyncIterator[pb.IngestReadingsRequest]:
        yield pb.IngestReadingsRequest(readings=hourly_readings("m", later, 20_000, quantity_kwh=2.0))
        await release.wait()
        yield pb.IngestReadingsRequest(readings=second)

    stream = asyncio.ensure_future(stub.IngestReadings(rewriting()))
    await eventually(lambda: _has_waiting_transaction(sql), within=30)
    deleting = asyncio.ensure_future(stub.DeleteReadings(deletion("2025-01-01", "2026-01-01", "m")))
    await eventually(lambda: _a_call_waits_on_a_lock(sql), within=10)
    release.set()
    response = await stream
    assert response.readings_received == 20_000 + len(second)
    assert (await deleting).deleted_count == 365 * 24
    assert await sql.fetchval("SELECT count(*) FROM readings WHERE time < '2026-01-01'") == 0
    await catalog_matches_readings(sql)


async def _has_waiting_transaction(sql: asyncpg.Connection) -> None:
    assert await service_transactions_waiting(sql) == 1


async def test_streams_and_deletions_of_one_meter_at_once_are_never_aborted(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    # Overlapping rewrites and deletions of one dense meter, all at once (fewer than the write
    # connections, so that none waits for one: on Citus streams of a series take turns while
    # holding theirs): each stream is one chunk, so nothing but the order between a deletion
    # and a stream can set them waiting on each other; whichever order the database picks,
    # both complete.
    minutes = [
        reading("m", datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=i), 1.0) for i in range(6000)
    ]
    await ingest(stub, batches(minutes, 3000))

    def rewrite(first: int, value: float) -> list[pb.IngestReadingsRequest]:
        return batches(
            [
                pb.Reading(series_id="m", time=r.time, quantity_kwh=value)
                for r in minutes[first : first + 1500]
            ],
            250,
        )

    calls: list[Awaitable[object]] = [
        ingest(stub, rewrite(first, value)) for value, first in enumerate(range(0, 4000, 500))
    ]
    calls += [
        stub.DeleteReadings(
            deletion(
                (datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=first)).isoformat(),
                (datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=first + 400)).isoformat(),
                "m",
            )
        )
        for first in range(0, 6000, 1000)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [outcome for outcome in outcomes if isinstance(outcome, BaseException)] == []
    await catalog_matches_readings(sql)
