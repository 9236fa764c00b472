"""ListQueryHistory: every successful query recorded once, newest first, paged by keyset."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest

from tests.conftest import server_config
from tests.support import (
    ADMIN,
    AUDITOR,
    KEY_FILE,
    READER,
    bearer,
    field_violations,
    hourly_readings,
    ingest,
    query_all_pages,
    service,
    ts,
)
from tests.support import add_series as add_to_catalog
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.limits import (
    HISTORY_ENTRY_MAX_BYTES,
    HISTORY_MAX_LABELS,
    HISTORY_MAX_SERIES_IDS,
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    MAX_GROUP_BY,
    MAX_LABELS,
    SELECTOR_MAX_SERIES_IDS,
    SERIES_ID_MAX_LENGTH,
)
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.query_history import LIST_CALLERS_HISTORY

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


# Whose entries a key sees: its own, unless it has the history-all scope.


@pytest.fixture
async def keyed_stub(database: Database, tmp_path: Path) -> AsyncIterator[Stub]:
    """A stub of a server that asks for the keys of tests.support.KEY_FILE."""
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    async with (
        grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield service(channel)


async def query_as(stub: Stub, key: str, *series_ids: str) -> None:
    for series_id in series_ids:
        await stub.QueryAggregates(
            pb.QueryAggregatesRequest(series_id=series_id, granularity=pb.GRANULARITY_MONTHLY),
            metadata=bearer(key),
        )


async def listed(stub: Stub, key: str, page_size: int = 0) -> list[tuple[str, str]]:
    """(caller_name, series_id) of every entry the key lists, page by page."""
    entries: list[tuple[str, str]] = []
    token = ""
    while True:
        page = await stub.ListQueryHistory(
            pb.ListQueryHistoryRequest(page_size=page_size, page_token=token), metadata=bearer(key)
        )
        entries.extend((entry.caller_name, entry.series_id) for entry in page.entries)
        token = page.next_page_token
        if not token:
            return entries


async def test_each_key_sees_only_its_own_history(keyed_stub: Stub, database: Database) -> None:
    await add_to_catalog(database, "reader-meter", "admin-meter")
    await query_as(keyed_stub, READER, "reader-meter")
    await query_as(keyed_stub, ADMIN, "admin-meter")
    assert await listed(keyed_stub, READER) == [("reader", "reader-meter")]
    assert await listed(keyed_stub, ADMIN) == [("admin", "admin-meter")]


async def test_a_key_with_the_history_all_scope_sees_every_callers_history(
    keyed_stub: Stub, database: Database
) -> None:
    await add_to_catalog(database, "reader-meter", "admin-meter")
    await query_as(keyed_stub, READER, "reader-meter")
    await query_as(keyed_stub, ADMIN, "admin-meter")
    assert await listed(keyed_stub, AUDITOR) == [("admin", "admin-meter"), ("reader", "reader-meter")]


async def test_a_callers_history_pages_through_its_own_entries_only(
    keyed_stub: Stub, database: Database
) -> None:
    series_ids = [f"meter-{number}" for number in range(13)]
    await add_to_catalog(database, *series_ids)
    # Interleaved: two of the admin's entries between each two of the reader's, and one each
    # side, so that a page boundary of the reader's falls on the admin's entries too.
    await query_as(keyed_stub, ADMIN, "meter-0")
    for number in range(1, 12, 3):
        await query_as(keyed_stub, READER, f"meter-{number}")
        await query_as(keyed_stub, ADMIN, f"meter-{number + 1}", f"meter-{number + 2}")
    first = await keyed_stub.ListQueryHistory(
        pb.ListQueryHistoryRequest(page_size=3), metadata=bearer(READER)
    )
    assert [entry.series_id for entry in first.entries] == ["meter-10", "meter-7", "meter-4"]
    # Entries added meanwhile, by either caller, change neither the next page nor its end.
    await query_as(keyed_stub, READER, "meter-0")
    await query_as(keyed_stub, ADMIN, "meter-1")
    rest = await keyed_stub.ListQueryHistory(
        pb.ListQueryHistoryRequest(page_size=3, page_token=first.next_page_token), metadata=bearer(READER)
    )
    assert [entry.series_id for entry in rest.entries] == ["meter-1"]
    assert rest.next_page_token == ""
    # A token is a position, not a permission: the admin's first page's token, passed by the
    # reader, continues the reader's own entries from there.
    admins_first = await keyed_stub.ListQueryHistory(
        pb.ListQueryHistoryRequest(page_size=4), metadata=bearer(ADMIN)
    )
    continued = await keyed_stub.ListQueryHistory(
        pb.ListQueryHistoryRequest(page_token=admins_first.next_page_token), metadata=bearer(READER)
    )
    assert [(entry.caller_name, entry.series_id) for entry in continued.entries] == [
        ("reader", "meter-7"),
        ("reader", "meter-4"),
        ("reader", "meter-1"),
    ]
    # Page by page and in one page alike, the admin's own entries, newest first.
    admin = [("admin", f"meter-{number}") for number in (1, 12, 11, 9, 8, 6, 5, 3, 2, 0)]
    assert await listed(keyed_stub, ADMIN, page_size=2) == admin
    assert await listed(keyed_stub, ADMIN, page_size=1000) == admin


async def test_with_authentication_off_every_callers_entries_are_listed(keyed_stub: Stub, stub: Stub) -> None:
    await add_series(stub, "reader-meter", "admin-meter", "open-meter")
    await query_as(keyed_stub, READER, "reader-meter")
    await query_as(keyed_stub, ADMIN, "admin-meter")
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id="open-meter", granularity=pb.GRANULARITY_MONTHLY)
    )
    entries = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest())).entries
    assert [(entry.caller_name, entry.series_id) for entry in entries] == [
        ("", "open-meter"),
        ("admin", "admin-meter"),
        ("reader", "reader-meter"),
    ]


# How large an entry may grow, whatever the query.


def unpacked_text(length: int, seed: int) -> str:
    """length characters of four bytes each in UTF-8 (CJK Extension B), in an order that
    PostgreSQL's compression cannot shrink."""
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x20000, 0x2A6D0)) for _ in range(length))


async def test_the_largest_query_records_an_entry_of_at_most_4_kib_that_says_it_was_cut(
    stub: Stub, sql: asyncpg.Connection
) -> None:
    series_ids = [
        f"{number:04}" + unpacked_text(SERIES_ID_MAX_LENGTH - 4, number)
        for number in range(SELECTOR_MAX_SERIES_IDS)
    ]
    await sql.copy_records_to_table(
        "series", records=[(series_id,) for series_id in series_ids], columns=["series_id"]
    )
    labels = {
        f"k{number:02}".ljust(LABEL_KEY_MAX_LENGTH, "x"): unpacked_text(
            LABEL_VALUE_MAX_LENGTH, 10_000 + number
        )
        for number in range(MAX_LABELS)
    }
    group_by = list(labels)[:MAX_GROUP_BY]
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            selector=pb.SeriesSelector(series_ids=series_ids, labels=labels),
            group_by=group_by,
            granularity=pb.GRANULARITY_DAY_OF_MONTH,
            time_zone="America/Argentina/ComodRivadavia",
        )
    )
    size, text_size = await sql.fetchrow(
        "SELECT pg_column_size(h.*), octet_length(h::text) FROM query_history AS h"
    )
    assert max(size, text_size) <= HISTORY_ENTRY_MAX_BYTES
    (entry,) = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest())).entries
    assert entry.selector_truncated
    assert entry.omitted_series_id_count == SELECTOR_MAX_SERIES_IDS - HISTORY_MAX_SERIES_IDS
    assert entry.omitted_label_count == MAX_LABELS - HISTORY_MAX_LABELS
    kept = sorted(series_ids)[:HISTORY_MAX_SERIES_IDS]
    assert list(entry.selector.series_ids) == [f"{series_id[:32]}…(+96)" for series_id in kept]
    assert dict(entry.selector.labels) == {key: f"{labels[key][:32]}…(+223)" for key in sorted(labels)[:8]}
    assert list(entry.group_by) == group_by


async def test_an_entry_within_the_bounds_is_kept_whole(stub: Stub) -> None:
    await add_series(stub, "m1", "m2")
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(
            selector=pb.SeriesSelector(series_ids=["m1", "m2"], labels={"a": "b"}),
            granularity=pb.GRANULARITY_DAY_OF_MONTH,
        )
    )
    (entry,) = (await stub.ListQueryHistory(pb.ListQueryHistoryRequest())).entries
    assert (list(entry.selector.series_ids), dict(entry.selector.labels)) == (["m1", "m2"], {"a": "b"})
    assert not entry.selector_truncated
    assert (entry.omitted_series_id_count, entry.omitted_label_count) == (0, 0)


async def test_a_callers_page_reads_that_callers_entries_only(sql: asyncpg.Connection) -> None:
    # 200,000 entries of ten callers, interleaved; one caller's page of 100 from the middle.
    await sql.execute(
        "INSERT INTO query_history (series_id, granularity, time_zone, page_size, continued_page, "
        "bucket_count, caller_name) "
        "SELECT 'm', 'hourly', 'UTC', 10, false, 0, 'caller-' || (n % 10) "
        "FROM generate_series(1, 200000) AS n"
    )
    await sql.execute("ANALYZE query_history")
    middle = await sql.fetchval("SELECT max(id) - 100000 FROM query_history")
    plan = await sql.fetchval(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {LIST_CALLERS_HISTORY}", middle, 101, "caller-3"
    )
    nodes = list(plan_nodes(json.loads(plan)[0]["Plan"]))
    scans = [node for node in nodes if "Scan" in node["Node Type"]]
    assert scans
    assert all(node.get("Index Name", "").endswith("query_history_by_caller") for node in scans)
    # Every row read is the caller's: no other caller's entry is read and thrown away.
    assert sum(node.get("Rows Removed by Filter", 0) for node in nodes) == 0
    assert sum(node["Actual Rows"] for node in scans) <= 101 * len(scans)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)
