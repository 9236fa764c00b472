"""API keys: who may call what, decided before any database work, and recorded in history."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import server_config
from tests.server_process import serve_on, stop
from tests.support import (
    ADMIN,
    AUDITOR,
    CATALOGUER,
    INGESTER,
    KEY_FILE,
    QUERY,
    READER,
    add_series,
    bearer,
    eventually,
    hourly_readings,
    service,
    ts,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.cli import main
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.domain.api_keys import (
    KeyFileError,
    Keyring,
    Scope,
    digest_of,
    key_file_line,
    new_key,
    parse_key_file,
)
from timeseries_aggregation.errors import KeysUnavailableError, PermissionDeniedError
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.transport.auth import METHOD_SCOPES, Authenticator
from timeseries_aggregation.transport.registration import SERVICE_NAME

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


@pytest.fixture
async def channel_with_auth(database: Database, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    # The series the calls name is in the catalog, so that a query of it answers.
    await add_series(database, "m1")
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield channel


async def call_all(
    stub: TimeseriesAggregationServiceAsyncStub, metadata: tuple[tuple[str, str], ...]
) -> list[grpc.StatusCode]:
    """The status of each RPC called with the given metadata."""
    codes = []

    async def requests() -> AsyncIterator[pb.IngestReadingsRequest]:
        yield pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 3))

    for call in (
        lambda: stub.IngestReadings(requests(), metadata=metadata),
        lambda: stub.QueryAggregates(QUERY, metadata=metadata),
        lambda: stub.ListQueryHistory(pb.ListQueryHistoryRequest(), metadata=metadata),
        lambda: stub.UpdateSeries(
            pb.UpdateSeriesRequest(series=pb.Series(series_id="m1", labels={"site": "a"})), metadata=metadata
        ),
        lambda: stub.ListSeries(pb.ListSeriesRequest(), metadata=metadata),
        lambda: stub.DeleteReadings(
            pb.DeleteReadingsRequest(
                selector=pb.SeriesSelector(series_ids=["m1"]),
                start_time=ts("2025-01-01"),
                end_time=ts("2026-01-01"),
            ),
            metadata=metadata,
        ),
    ):
        try:
            await call()
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    return codes


async def test_callers_without_a_valid_key_are_unauthenticated(channel_with_auth: grpc.aio.Channel) -> None:
    stub = service(channel_with_auth)
    unauthenticated = [grpc.StatusCode.UNAUTHENTICATED] * 6
    assert await call_all(stub, ()) == unauthenticated
    assert await call_all(stub, bearer("tsa_not-a-key")) == unauthenticated
    assert await call_all(stub, (("authorization", f"Basic {ADMIN}"),)) == unauthenticated
    assert await call_all(stub, (("authorization", "Bearer"),)) == unauthenticated


async def test_a_call_with_more_than_one_authorization_entry_is_refused(
    channel_with_auth: grpc.aio.Channel,
) -> None:
    stub = service(channel_with_auth)
    unauthenticated = [grpc.StatusCode.UNAUTHENTICATED] * 6
    invalid_then_valid = (("authorization", "Bearer tsa_not-a-key"), ("authorization", f"Bearer {ADMIN}"))
    assert await call_all(stub, invalid_then_valid) == unauthenticated
    assert await call_all(stub, bearer(ADMIN) + bearer(ADMIN)) == unauthenticated
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(QUERY, metadata=invalid_then_valid)
    assert "one 'authorization' metadata entry" in (raised.value.details() or "")


def test_every_method_of_the_service_has_a_scope() -> None:
    service_descriptor = pb.DESCRIPTOR.services_by_name["TimeseriesAggregationService"]
    methods = {f"/{service_descriptor.full_name}/{method.name}" for method in service_descriptor.methods}
    assert set(METHOD_SCOPES) == methods


def test_a_method_without_a_scope_is_closed_to_every_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    with pytest.raises(PermissionDeniedError, match="a scope no key has"):
        Authenticator(keys).caller(bearer(ADMIN), None)


@pytest.mark.parametrize("text", ["", "\n\n", "# every key was removed\n"])
def test_a_key_file_without_keys_is_refused_at_start(tmp_path: Path, text: str) -> None:
    keys = tmp_path / "keys"
    keys.write_text(text)
    with pytest.raises(KeyFileError, match="holds no key"):
        Authenticator(keys)


def test_a_reload_that_finds_no_keys_takes_every_key_out_of_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    authenticator = Authenticator(keys)
    keys.write_text("")  # what a reader sees halfway through a non-atomic rewrite
    assert authenticator.reload() is False
    with pytest.raises(KeysUnavailableError, match="could not be reloaded"):
        authenticator.caller(bearer(ADMIN), Scope.QUERY)
    [record] = [record for record in caplog.records if "not reloaded" in record.getMessage()]
    assert record.levelno == logging.ERROR
    assert "holds no key" in record.getMessage()
    keys.write_text(KEY_FILE)
    assert authenticator.reload() is True
    assert authenticator.caller(bearer(ADMIN), Scope.QUERY).name == "admin"


def test_a_reload_counts_the_keys_it_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    authenticator = Authenticator(keys)
    keys.write_text(key_file_line("reader", frozenset({Scope.QUERY}), READER) + "\n")
    caplog.set_level(logging.INFO)
    authenticator.reload()
    keys.write_text("reader query\n")  # a line missing its digest
    authenticator.reload()
    assert [record.getMessage() for record in caplog.records] == [
        "API keys reloaded: 1 key",
        "API keys not reloaded, no key is in force: line 1: expected 'NAME SCOPES sha256:HEX', "
        "found 2 fields; every call of the service fails UNAVAILABLE until the file is fixed and "
        "SIGHUP sent again",
    ]


async def test_a_revocation_with_a_typo_leaves_no_key_working_and_health_not_serving(
    database: Database, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    await add_series(database, "m1")
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = service(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await stub.QueryAggregates(QUERY, metadata=bearer(READER))
        # Meant to revoke the reader's key; a stray character breaks the admin's line.
        without_reader = KEY_FILE.replace(key_file_line("reader", frozenset({Scope.QUERY}), READER), "")
        keys.write_text(without_reader.replace("admin ingest", "admin ingest;"))
        await running.reload()  # what SIGHUP does
        for key in (READER, ADMIN, "tsa_unknown"):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.QueryAggregates(QUERY, metadata=bearer(key))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "key file could not be reloaded" in (raised.value.details() or "")
        for name in ("", SERVICE_NAME):
            checked = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert checked.status == health_pb2.HealthCheckResponse.NOT_SERVING

        keys.write_text(without_reader)
        await running.reload()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryAggregates(QUERY, metadata=bearer(READER))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await stub.QueryAggregates(QUERY, metadata=bearer(ADMIN))
        for name in ("", SERVICE_NAME):
            checked = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert checked.status == health_pb2.HealthCheckResponse.SERVING


def test_a_group_writable_key_file_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    keys.chmod(0o660)
    authenticator = Authenticator(keys)
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert f"{keys} is writable by its group (mode 0660)" in warning.getMessage()
    assert authenticator.reload() is True
    assert len([record for record in caplog.records if record.levelno == logging.WARNING]) == 2
    keys.chmod(0o644)  # readable by all is fine: the file holds digests only
    caplog.clear()
    Authenticator(keys)
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_a_world_writable_key_file_is_refused_at_start_and_on_reload(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    keys.chmod(0o666)
    with pytest.raises(KeyFileError, match=rf"{keys} is writable by every user \(mode 0666\)"):
        Authenticator(keys)
    keys.chmod(0o600)
    authenticator = Authenticator(keys)
    keys.chmod(0o602)
    assert authenticator.reload() is False
    with pytest.raises(KeysUnavailableError):
        authenticator.caller(bearer(ADMIN), Scope.QUERY)


async def test_scopes_decide_what_a_key_may_do(
    channel_with_auth: grpc.aio.Channel, database: Database
) -> None:
    stub = service(channel_with_auth)
    ok, denied = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
    # IngestReadings, QueryAggregates, ListQueryHistory, UpdateSeries, ListSeries, DeleteReadings
    assert await call_all(stub, bearer(READER)) == [denied, ok, ok, denied, ok, denied]
    async with database.query_connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM readings") == 0
    # UpdateSeries creates series and shows their labels and counts: catalog, not ingest.
    assert await call_all(stub, bearer(INGESTER)) == [ok, denied, denied, denied, denied, denied]
    assert await call_all(stub, bearer(CATALOGUER)) == [ok, denied, denied, ok, denied, denied]
    assert await call_all(stub, bearer(ADMIN)) == [ok, ok, ok, ok, ok, ok]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryAggregates(QUERY, metadata=bearer(INGESTER))
    assert "'ingester'" in (raised.value.details() or "")
    assert "'query' scope" in (raised.value.details() or "")


async def test_history_records_the_callers_key_name(channel_with_auth: grpc.aio.Channel) -> None:
    stub = service(channel_with_auth)
    await stub.QueryAggregates(QUERY, metadata=bearer(READER))
    await stub.QueryAggregates(QUERY, metadata=bearer(ADMIN))
    history = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(), metadata=bearer(AUDITOR))
    assert [entry.caller_name for entry in history.entries] == ["admin", "reader"]


async def test_an_ingest_key_cannot_update_series_and_a_catalog_key_can(
    channel_with_auth: grpc.aio.Channel, database: Database
) -> None:
    stub = service(channel_with_auth)
    update = pb.UpdateSeriesRequest(series=pb.Series(series_id="new-meter", labels={"customer": "acme"}))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateSeries(update, metadata=bearer(INGESTER))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'catalog' scope" in (raised.value.details() or "")
    async with database.query_connection() as connection:
        # Refused before the handler ran: the series was not created.
        assert await connection.fetchval("SELECT count(*) FROM series WHERE series_id = 'new-meter'") == 0
    series = await stub.UpdateSeries(update, metadata=bearer(CATALOGUER))
    assert (series.series_id, dict(series.labels)) == ("new-meter", {"customer": "acme"})


async def test_health_and_reflection_need_no_key(channel_with_auth: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel_with_auth)
    response = await health.Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_key_file_lines_round_trip_and_never_hold_the_key() -> None:
    key = new_key()
    line = key_file_line("billing-loader", frozenset({Scope.INGEST}), key)
    assert key not in line
    [parsed] = parse_key_file(line)
    assert (parsed.name, parsed.scopes, parsed.digest) == (
        "billing-loader",
        frozenset({Scope.INGEST}),
        digest_of(key),
    )
    assert Keyring([parsed]).find(key) == parsed
    assert Keyring([parsed]).find(key + "x") is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("alice query", "line 1: expected 'NAME SCOPES sha256:HEX'"),
        ("alice admin sha256:" + "0" * 64, "line 1: scopes must be"),
        ("alice query md5:abc", "line 1: the third field"),
        ("alice query sha256:" + "0" * 63, "line 1: the third field"),
        ("a/b query sha256:" + "0" * 64, "line 1: a name is"),
        (
            "# ok\nalice query sha256:" + "0" * 64 + "\nalice ingest sha256:" + "1" * 64,
            "line 3: the name 'alice' is used twice",
        ),
    ],
)
def test_malformed_key_files_name_the_line(text: str, words: str) -> None:
    with pytest.raises(KeyFileError) as raised:
        parse_key_file(text)
    assert words in str(raised.value)


async def test_keys_generate_prints_a_key_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--name", "meter-loader", "--scopes", "ingest"]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[1].strip()
    line = lines[3].strip()
    assert key.startswith("tsa_")
    [parsed] = parse_key_file(line)
    assert parsed.name == "meter-loader"
    assert parsed.scopes == frozenset({Scope.INGEST})
    assert parsed.digest == digest_of(key)
    assert main(["keys", "generate", "--name", "x", "--scopes", "everything"]) == 2


async def test_sighup_reloads_the_key_file_and_refuses_every_key_while_it_is_broken(
    database_url: str, sql: asyncpg.Connection, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    await sql.execute("INSERT INTO series (series_id) VALUES ('m1')")  # the series QUERY names
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("reader", frozenset({Scope.QUERY}), READER))
    process, port = await serve_on(
        database_url, tmp_path / "server.log", cleanup, AUTH_MODE="api-key", API_KEYS_FILE=str(keys)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await stub.QueryAggregates(QUERY, metadata=bearer(READER))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryAggregates(QUERY, metadata=bearer(ADMIN))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

        keys.write_text(KEY_FILE)
        os.kill(process.pid, signal.SIGHUP)

        async def admin_accepted() -> None:
            await stub.QueryAggregates(QUERY, metadata=bearer(ADMIN))

        await eventually(admin_accepted, within=5)
        keys.write_text("this is not a key file")
        os.kill(process.pid, signal.SIGHUP)

        async def not_serving() -> None:
            response = await health.Check(health_pb2.HealthCheckRequest())
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving, within=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryAggregates(QUERY, metadata=bearer(ADMIN))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        keys.write_text(KEY_FILE)
        os.kill(process.pid, signal.SIGHUP)
        await eventually(admin_accepted, within=5)
        response = await health.Check(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert await stop(process) == 0
    log = (tmp_path / "server.log").read_text()
    assert "API keys not reloaded" in log
    assert READER not in log
    assert ADMIN not in log


async def test_the_server_refuses_to_start_without_keys_unless_auth_is_off(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "timeseries_aggregation", "serve"],
        env={k: v for k, v in os.environ.items() if not k.startswith("TIMESERIES_AGGREGATION_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TIMESERIES_AGGREGATION_API_KEYS_FILE" in result.stderr
