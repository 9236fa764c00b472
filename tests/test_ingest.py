"""IngestReadings: atomic streams, last write wins, and validation that stores nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from tests.support import (
    batches,
    eventually,
    field_violations,
    hourly_readings,
    ingest,
    reading,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.limits import MAX_READINGS_PER_MESSAGE
from timeseries_aggregation.storage.database import Database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


async def stored(database: Database, series_id: str) -> dict[str, float]:
    """The stored readings of a series as {iso time: quantity}, read straight from the table."""
    async with database.query_connection() as connection:
        rows = await connection.fetch(
            "SELECT time, quantity_kwh FROM readings WHERE series_id = $1 ORDER BY time", series_id
        )
    return {row["time"].isoformat(): row["quantity_kwh"] for row in rows}


async def count_all(database: Database) -> int:
    async with database.query_connection() as connection:
        total: int = await connection.fetchval("SELECT count(*) FROM readings")
    return total


async def test_stream_of_many_messages_is_stored(stub: Stub, database: Database) -> None:
    readings = hourly_readings("m1", "2025-01-01", 25_000, 2.5)
    response = await ingest(stub, batches(readings, 1_000))
    assert (response.readings_received, response.messages_received, response.series_count) == (
        25_000,
        25,
        1,
    )
    values = await stored(database, "m1")
    assert len(values) == 25_000
    assert set(values.values()) == {2.5}


async def test_empty_stream_is_ok(stub: Stub, database: Database) -> None:
    response = await ingest(stub, [])
    assert (response.readings_received, response.messages_received, response.series_count) == (0, 0, 0)
    response = await ingest(stub, [pb.IngestReadingsRequest()])
    assert (response.readings_received, response.messages_received) == (0, 1)
    assert await count_all(database) == 0


async def test_last_write_wins_within_one_message(stub: Stub, database: Database) -> None:
    response = await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[
                    reading("m1", "2025-01-01T00:00", 1),
                    reading("m1", "2025-01-01T00:00", 2),
                    reading("m1", "2025-01-01T01:00", 5),
                    reading("m1", "2025-01-01T00:00", 3),
                ]
            )
        ],
    )
    assert (response.readings_received, response.series_count) == (4, 1)
    assert await stored(database, "m1") == {
        "2025-01-01T00:00:00+00:00": 3.0,
        "2025-01-01T01:00:00+00:00": 5.0,
    }


async def test_last_write_wins_across_messages_of_one_stream(stub: Stub, database: Database) -> None:
    # Far apart messages land in different COPY chunks; the later one must still win.
    filler = hourly_readings("filler", "2030-01-01", 12_000)
    requests = [
        pb.IngestReadingsRequest(readings=[reading("m1", "2025-01-01T00:00", 1)]),
        *batches(filler, 4_000),
        pb.IngestReadingsRequest(readings=[reading("m1", "2025-01-01T00:00", 7)]),
    ]
    await ingest(stub, requests)
    assert await stored(database, "m1") == {"2025-01-01T00:00:00+00:00": 7.0}


async def test_last_write_wins_across_streams_and_resend_is_safe(stub: Stub, database: Database) -> None:
    first = hourly_readings("m1", "2025-01-01", 48, 1.0)
    await ingest(stub, batches(first, 10))
    await ingest(stub, batches(first, 10))
    assert len(await stored(database, "m1")) == 48
    second = hourly_readings("m1", "2025-01-02", 48, 4.0)  # overlaps the second day
    response = await ingest(stub, batches(second, 7))
    assert response.readings_received == 48
    values = await stored(database, "m1")
    assert len(values) == 72
    assert values["2025-01-01T23:00:00+00:00"] == 1.0
    assert values["2025-01-02T00:00:00+00:00"] == 4.0
    assert values["2025-01-03T23:00:00+00:00"] == 4.0


async def test_series_are_independent(stub: Stub, database: Database) -> None:
    await ingest(
        stub,
        [pb.IngestReadingsRequest(readings=[reading("a", "2025-01-01", 1), reading("b", "2025-01-01", 2)])],
    )
    assert await stored(database, "a") == {"2025-01-01T00:00:00+00:00": 1.0}
    assert await stored(database, "b") == {"2025-01-01T00:00:00+00:00": 2.0}


async def test_bad_reading_mid_stream_stores_nothing(stub: Stub, database: Database) -> None:
    await ingest(stub, [pb.IngestReadingsRequest(readings=[reading("m1", "2024-06-01", 42)])])
    good = hourly_readings("m1", "2025-01-01", 30_000)
    requests = batches(good, 5_000)  # 6 messages; more than one COPY chunk is staged first
    requests.insert(4, pb.IngestReadingsRequest(readings=[reading("m1", "2025-06-01", math.nan)]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, requests)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert details.startswith("readings[0].quantity_kwh: must be a finite number, got nan")
    assert "(message 4, reading 20000 of the stream)" in details
    assert field_violations(raised.value) == ["readings[0].quantity_kwh"]
    # The earlier stream's reading is untouched; nothing of the failed stream is visible.
    assert await stored(database, "m1") == {"2024-06-01T00:00:00+00:00": 42.0}


BAD_READINGS = [
    (pb.Reading(time=ts("2025-01-01"), quantity_kwh=1), "readings[1].series_id", "empty"),
    (pb.Reading(series_id="x" * 129, time=ts("2025-01-01"), quantity_kwh=1), "readings[1].series_id", "129"),
    (pb.Reading(series_id="a\nb", time=ts("2025-01-01"), quantity_kwh=1), "readings[1].series_id", "control"),
    (pb.Reading(series_id="   ", time=ts("2025-01-01"), quantity_kwh=1), "readings[1].series_id", "blank"),
    (
        pb.Reading(series_id="m\u200b1", time=ts("2025-01-01"), quantity_kwh=1),
        "readings[1].series_id",
        "an invisible format character U+200B (ZERO WIDTH SPACE)",
    ),
    (pb.Reading(series_id="m1", quantity_kwh=1), "readings[1].time", "required"),
    (
        pb.Reading(series_id="m1", time=ts("2025-01-01"), quantity_kwh=math.nan),
        "readings[1].quantity_kwh",
        "finite",
    ),
    (
        pb.Reading(series_id="m1", time=ts("2025-01-01"), quantity_kwh=math.inf),
        "readings[1].quantity_kwh",
        "finite",
    ),
    (
        pb.Reading(series_id="m1", time=ts("2025-01-01"), quantity_kwh=-math.inf),
        "readings[1].quantity_kwh",
        "finite",
    ),
    (
        pb.Reading(series_id="m1", time=ts("2025-01-01"), quantity_kwh=1.7e308),
        "readings[1].quantity_kwh",
        "is 1.7e+308 kWh; a reading lies within ±1e+12 kWh",
    ),
    (
        pb.Reading(series_id="m1", time=ts("2025-01-01"), quantity_kwh=-1.000001e12),
        "readings[1].quantity_kwh",
        "is -1000001000000.0 kWh; a reading lies within ±1e+12 kWh",
    ),
    (pb.Reading(series_id="m1", time=ts("1969-12-31T23:59:59"), quantity_kwh=1), "readings[1].time", "range"),
    (pb.Reading(series_id="m1", time=ts("2100-01-01"), quantity_kwh=1), "readings[1].time", "range"),
]


@pytest.mark.parametrize(("bad", "field", "words"), BAD_READINGS)
async def test_invalid_reading_is_rejected_with_its_field(
    stub: Stub, database: Database, bad: pb.Reading, field: str, words: str
) -> None:
    request = pb.IngestReadingsRequest(readings=[reading("m1", "2025-01-01", 1), bad])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, [request])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert details.startswith(field + ":")
    assert words in details
    assert field_violations(raised.value) == [field]
    assert await count_all(database) == 0


async def test_invalid_timestamp_nanos_is_rejected(stub: Stub, database: Database) -> None:
    bad = pb.Reading(series_id="m1", quantity_kwh=1)
    bad.time.seconds = 1_700_000_000
    bad.time.nanos = 1_500_000_000
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, [pb.IngestReadingsRequest(readings=[bad])])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["readings[0].time"]


async def test_too_many_readings_in_one_message(stub: Stub, database: Database) -> None:
    too_many = hourly_readings("m1", "2025-01-01", MAX_READINGS_PER_MESSAGE + 1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, [pb.IngestReadingsRequest(readings=too_many)])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["readings"]
    assert "message 0 holds 50001 readings" in (raised.value.details() or "")
    assert await count_all(database) == 0


async def _stream_then_stop(stub: Stub, stop: str) -> None:
    """Send two messages, then cancel the call or let its deadline pass while idle."""
    sent = asyncio.Event()

    async def requests() -> AsyncIterator[pb.IngestReadingsRequest]:
        for request in batches(hourly_readings("m1", "2025-01-01", 2_000), 1_000):
            yield request
        sent.set()
        await asyncio.sleep(3600)

    call = stub.IngestReadings(requests(), timeout=1.5 if stop == "deadline" else None)
    await sent.wait()
    if stop == "cancel":
        call.cancel()
    with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)) as raised:
        await call
    if stop == "deadline":
        assert isinstance(raised.value, grpc.aio.AioRpcError)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def nothing_in_flight(database: Database) -> None:
    """No connection but this one is busy on the test's database: every stream gave its back."""
    async with database.query_connection() as connection:
        busy = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'"
        )
    assert busy == 0


@pytest.mark.parametrize("stop", ["cancel", "deadline"])
async def test_cancelled_or_expired_stream_stores_nothing_and_a_retry_works(
    stub: Stub, database: Database, stop: str
) -> None:
    await _stream_then_stop(stub, stop)

    await eventually(lambda: nothing_in_flight(database))
    assert await count_all(database) == 0
    response = await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 2_000), 1_000))
    assert response.readings_received == 2_000
    assert await count_all(database) == 2_000


def columns(series_id: str, start: str, values: list[float], step_hours: int = 1) -> pb.SeriesReadings:
    """Columnar readings of one series, hourly from start."""
    first = ts(start).ToMicroseconds()
    return pb.SeriesReadings(
        series_id=series_id,
        time_unix_micros=[first + i * step_hours * 3_600_000_000 for i in range(len(values))],
        quantity_kwh=values,
    )


async def test_columnar_readings_are_stored_like_row_readings(stub: Stub, database: Database) -> None:
    response = await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[reading("rows", "2025-01-01T00:00", 1)],
                series_readings=[columns("a", "2025-01-01", [1, 2, 3]), columns("b", "2025-01-01", [4])],
            ),
            pb.IngestReadingsRequest(series_readings=[columns("a", "2025-01-01T03:00", [5])]),
        ],
    )
    assert (response.readings_received, response.messages_received, response.series_count) == (6, 2, 3)
    assert await stored(database, "a") == {
        "2025-01-01T00:00:00+00:00": 1.0,
        "2025-01-01T01:00:00+00:00": 2.0,
        "2025-01-01T02:00:00+00:00": 3.0,
        "2025-01-01T03:00:00+00:00": 5.0,
    }
    assert await stored(database, "b") == {"2025-01-01T00:00:00+00:00": 4.0}
    assert await stored(database, "rows") == {"2025-01-01T00:00:00+00:00": 1.0}


async def test_within_a_message_columns_come_after_rows(stub: Stub, database: Database) -> None:
    await ingest(
        stub,
        [
            pb.IngestReadingsRequest(
                readings=[reading("a", "2025-01-01T00:00", 1)],
                series_readings=[columns("a", "2025-01-01", [2]), columns("a", "2025-01-01", [3])],
            )
        ],
    )
    assert await stored(database, "a") == {"2025-01-01T00:00:00+00:00": 3.0}


BAD_COLUMNS = [
    (columns("", "2025-01-01", [1]), "series_readings[1].series_id", "empty"),
    (columns("m", "2025-01-01", [1, 2, math.nan]), "series_readings[1].quantity_kwh[2]", "finite"),
    (columns("m", "2025-01-01", [1, 1e12, 2e12]), "series_readings[1].quantity_kwh[2]", "within ±1e+12 kWh"),
    (columns("m", "2099-12-31T23:00", [1, 2]), "series_readings[1].time_unix_micros[1]", "range"),
    (
        pb.SeriesReadings(series_id="m", time_unix_micros=[-1], quantity_kwh=[1]),
        "series_readings[1].time_unix_micros[0]",
        "range",
    ),
    (
        pb.SeriesReadings(series_id="m", time_unix_micros=[2**63 - 1], quantity_kwh=[1]),
        "series_readings[1].time_unix_micros[0]",
        "range",
    ),
    (
        pb.SeriesReadings(series_id="m", time_unix_micros=[0, 1], quantity_kwh=[1]),
        "series_readings[1].quantity_kwh",
        "has 1 entry but time_unix_micros has 2",
    ),
]


@pytest.mark.parametrize(("bad", "field", "words"), BAD_COLUMNS)
async def test_invalid_columnar_readings_are_rejected_with_their_field(
    stub: Stub, database: Database, bad: pb.SeriesReadings, field: str, words: str
) -> None:
    first = pb.IngestReadingsRequest(series_readings=[columns("ok", "2025-01-01", [1.0] * 30_000)])
    second = pb.IngestReadingsRequest(
        readings=[reading("ok", "2030-01-01", 1)],
        series_readings=[columns("ok", "2031-01-01", [1]), bad],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, [first, second])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert details.startswith(field + ":")
    assert words in details
    assert "message 1" in details
    assert field_violations(raised.value) == [field]
    assert await count_all(database) == 0


async def test_the_first_bad_reading_of_a_message_is_reported(stub: Stub, database: Database) -> None:
    request = pb.IngestReadingsRequest(
        readings=[
            reading("m", "2025-01-01", 1),
            reading("m", "2025-01-01", math.nan),
            pb.Reading(series_id="", time=ts("2025-01-01"), quantity_kwh=1),
        ],
        series_readings=[columns("", "2025-01-01", [1])],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, [request])
    assert field_violations(raised.value) == ["readings[1].quantity_kwh"]
    assert "reading 1 of the stream" in (raised.value.details() or "")


def two_fresh_meters() -> list[pb.IngestReadingsRequest]:
    """Messages of 20,000 new hourly readings of m0 and of m1 (a chunk each), all 1 kWh."""
    return [
        pb.IngestReadingsRequest(series_readings=[columns(f"m{n}", "2020-01-01", [1.0] * 20_000)])
        for n in range(2)
    ]


async def test_conflicts_after_fresh_chunks_still_last_write_wins(stub: Stub, database: Database) -> None:
    # 40,000 fresh readings go straight into the table; then a stored key and a key of this
    # stream come again, which moves the rest of the stream to the upsert path.
    await ingest(stub, [pb.IngestReadingsRequest(readings=[reading("old", "2025-01-01", 1)])])
    fresh = two_fresh_meters()
    again = pb.IngestReadingsRequest(
        readings=[reading("old", "2025-01-01", 2), reading("m0", "2020-01-01T05:00", 7)],
        series_readings=[columns("m1", "2020-01-01", [3.0] * 25_000)],
    )
    response = await ingest(stub, [*fresh, again])
    assert response.readings_received == 65_002
    assert await stored(database, "old") == {"2025-01-01T00:00:00+00:00": 2.0}
    m0 = await stored(database, "m0")
    assert len(m0) == 20_000
    assert m0["2020-01-01T05:00:00+00:00"] == 7.0
    assert sum(m0.values()) == 20_000 - 1 + 7
    m1 = await stored(database, "m1")
    assert len(m1) == 25_000
    assert set(m1.values()) == {3.0}


async def test_resending_a_large_stream_replaces_values_and_adds_no_rows(
    stub: Stub, database: Database
) -> None:
    first = [pb.IngestReadingsRequest(series_readings=[columns("m", "2020-01-01", [1.0] * 30_000)])]
    # 15,000 hours after 2020-01-01 (a leap year) is 2021-09-17.
    second = [
        pb.IngestReadingsRequest(series_readings=[columns("m", "2020-01-01", [2.0] * 15_000)]),
        pb.IngestReadingsRequest(series_readings=[columns("m", "2021-09-17T00:00", [2.0] * 15_000)]),
    ]
    await ingest(stub, first)
    await ingest(stub, second)
    values = await stored(database, "m")
    assert len(values) == 30_000
    assert set(values.values()) == {2.0}


async def test_the_response_counts_the_keys_written_and_those_that_were_new(
    stub: Stub, database: Database, sql: asyncpg.Connection
) -> None:
    # A stored key; then a stream whose fresh readings go straight into the table before it
    # repeats keys of its own (in later chunks, which the database writes a second time)
    # and the stored one, one of them twice in a message.
    await ingest(stub, [pb.IngestReadingsRequest(readings=[reading("old", "2025-01-01", 1)])])
    fresh = two_fresh_meters()
    again = pb.IngestReadingsRequest(
        readings=[reading("old", "2025-01-01", 2), reading("m0", "2020-01-01T05:00", 7)],
        series_readings=[
            columns("m1", "2020-01-01", [3.0] * 25_000),
            columns("m1", "2020-01-01", [4.0] * 10),
        ],
    )

    response = await ingest(stub, [*fresh, again])

    assert (response.readings_received, response.series_count) == (65_012, 3)
    # m0's 20,000 keys and m1's 25,000 are new; the stored one was replaced.
    assert (response.keys_written, response.keys_added) == (45_001, 45_000)
    assert await count_all(database) == 45_001

    # Sent again with 10,000 more hours: every key is written once, 10,000 of them new.
    more = pb.IngestReadingsRequest(series_readings=[columns("m0", "2020-01-01", [5.0] * 30_000)])
    response = await ingest(stub, [more, more])

    assert (response.readings_received, response.keys_written, response.keys_added) == (
        60_000,
        30_000,
        10_000,
    )
    assert await count_all(database) == 55_001
    assert await sql.fetchval("SELECT count(*) FROM readings WHERE series_id = 'm0'") == 30_000


async def test_a_stream_whose_connection_is_terminated_fails_and_the_next_one_works(
    stub: Stub, database: Database
) -> None:
    first_sent = asyncio.Event()
    terminated = asyncio.Event()

    async def interrupted() -> AsyncIterator[pb.IngestReadingsRequest]:
        for request in batches(hourly_readings("m1", "2025-01-01", 30_000), 10_000):
            yield request
        first_sent.set()
        await terminated.wait()
        yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2030-01-01", 30_000))

    call = stub.IngestReadings(interrupted())
    await first_sent.wait()

    async def stream_transaction_terminated() -> None:
        async with database.query_connection() as connection:
            # The stream's transaction once its first chunk is in (its savepoint released, or on
            # Citus its staging table emptied), while it waits for the next; a backend terminated
            # during a COPY leaves asyncpg waiting until the statement timeout, which this test is
            # not about.
            killed = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'timeseries-aggregation' "
                "AND state = 'idle in transaction' "
                "AND (query LIKE 'RELEASE SAVEPOINT%' OR query = 'TRUNCATE ingest_staging')"
            )
        assert killed == 1

    await eventually(stream_transaction_terminated)
    terminated.set()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await count_all(database) == 0
    response = await ingest(stub, batches(hourly_readings("m1", "2025-01-01", 100), 50))
    assert response.readings_received == 100
    assert await count_all(database) == 100


async def test_streams_cancelled_at_any_moment_log_no_error(
    stub: Stub, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A client may cancel a stream whenever it likes: before its first chunk reaches the
    database, during the COPY, the catalog's update or the commit. Nothing is wrong then, and
    nothing (asyncpg's pool included) may log an error for it."""
    messages = batches(hourly_readings("warm-up", "2025-01-01", 20_000), 5_000)
    started = time.monotonic()
    await ingest(stub, messages)
    duration = time.monotonic() - started
    caplog.set_level(logging.WARNING)
    # From the start to past the end of a stream, in steps of 2.5 % of one.
    for number in range(48):
        readings = hourly_readings(f"cancelled-{number}", "2025-01-01", 20_000)
        call = stub.IngestReadings(iter(batches(readings, 5_000)))
        asyncio.get_running_loop().call_later(duration * number / 40, call.cancel)
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await call

    await eventually(lambda: nothing_in_flight(database))
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
