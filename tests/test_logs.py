"""Structured logs: JSON lines, access log fields, the text format, and secrets kept out."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import server_config
from tests.support import add_series, eventually, hourly_readings
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.observability.logs import REDACTED, configure_logging
from timeseries_aggregation.storage.database import Database

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

SERVICE = "timeseries.v1.TimeseriesAggregationService"
CANARY_KEY = new_key()
UNKNOWN_CANARY_KEY = new_key()
CANARY_PASSWORD = "canary-pa55word-7f3a"
CANARY_URL = f"postgresql://ingest:{CANARY_PASSWORD}@db.internal:5432/timeseries"

ConfigureLogs = Callable[..., io.StringIO]


class Terminal(io.StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def configure_logs() -> Iterator[ConfigureLogs]:
    """configure_logging into a string buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def configure(output: io.StringIO | None = None, **settings: Any) -> io.StringIO:
        stream = io.StringIO() if output is None else output
        configure_logging(server_config(**settings), stream)
        return stream

    yield configure
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def json_lines(output: io.StringIO) -> list[dict[str, Any]]:
    """Every line of the output, each of which must be one JSON object."""
    entries = [json.loads(line) for line in output.getvalue().splitlines()]
    assert all(isinstance(entry, dict) for entry in entries)
    return entries


def access_entries(output: io.StringIO) -> list[dict[str, Any]]:
    return [entry for entry in json_lines(output) if entry["logger"] == "timeseries_aggregation.access"]


async def access_entries_of(output: io.StringIO, count: int) -> list[dict[str, Any]]:
    """The access lines once `count` are written: a call's line is written as the call ends,
    which may be just after the client has its answer."""

    async def written() -> list[dict[str, Any]]:
        entries = access_entries(output)
        assert len(entries) == count
        return entries

    return await eventually(written, within=5)


def test_records_are_json_lines_when_output_is_not_a_terminal(configure_logs: ConfigureLogs) -> None:
    output = configure_logs()
    logger = logging.getLogger("tests.logs")
    logger.info("stored %d readings", 3, extra={"series_id": "m1"})
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("multi\nline")

    first, second = json_lines(output)
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.logs"
    assert first["message"] == "stored 3 readings"
    assert first["series_id"] == "m1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "ERROR"
    assert second["message"] == "multi\nline"
    assert "ValueError: broken" in second["exception"]


def test_text_on_a_terminal_and_when_asked(configure_logs: ConfigureLogs) -> None:
    for output, log_format in ((Terminal(), None), (io.StringIO(), "text")):
        configure_logs(output, log_format=log_format)
        logging.getLogger("tests.logs").warning("disk %s", "full", extra={"free_bytes": 0})
        [line] = output.getvalue().splitlines()
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING tests\.logs: disk full free_bytes=0", line
        )


def test_json_on_a_terminal_when_asked(configure_logs: ConfigureLogs) -> None:
    output = configure_logs(Terminal(), log_format="json")
    logging.getLogger("tests.logs").warning("hello")
    assert json_lines(output)[0]["message"] == "hello"


def test_level_comes_from_the_configuration(configure_logs: ConfigureLogs) -> None:
    output = configure_logs(log_level="WARNING")
    logger = logging.getLogger("tests.logs")
    logger.info("hidden")
    logger.warning("shown")
    assert [entry["message"] for entry in json_lines(output)] == ["shown"]


def test_configuring_again_replaces_the_handler(configure_logs: ConfigureLogs) -> None:
    first = configure_logs()
    second = configure_logs()
    logging.getLogger("tests.logs").warning("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(
        key_file_line("billing-loader", frozenset({Scope.INGEST, Scope.QUERY}), CANARY_KEY) + "\n"
    )
    return path


@pytest.fixture
async def authenticated_stub(database: Database, key_file: Path) -> AsyncIterator[Stub]:
    await add_series(database, "m1")  # the series the tests query
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=key_file)
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield pb_grpc.TimeseriesAggregationServiceStub(channel)


def metadata(key: str, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    pairs = [("authorization", f"Bearer {key}")]
    if request_id is not None:
        pairs.append(("x-request-id", request_id))
    return tuple(pairs)


async def test_access_log_of_each_call(configure_logs: ConfigureLogs, authenticated_stub: Stub) -> None:
    output = configure_logs()
    query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_HOURLY)
    await authenticated_stub.QueryAggregates(query, metadata=metadata(CANARY_KEY, "req-42"))
    with pytest.raises(grpc.aio.AioRpcError):
        await authenticated_stub.QueryAggregates(query, metadata=metadata(UNKNOWN_CANARY_KEY))

    ok, refused = await access_entries_of(output, 2)
    assert ok["method"] == f"/{SERVICE}/QueryAggregates"
    assert ok["status"] == "OK"
    assert ok["level"] == "INFO"
    assert ok["message"].startswith("QueryAggregates OK in ")
    assert isinstance(ok["duration_ms"], float)
    assert ok["duration_ms"] > 0
    assert ok["peer"].startswith("ipv4:127.0.0.1:")
    assert ok["request_id"] == "req-42"
    assert ok["caller"] == "billing-loader"
    assert refused["status"] == "UNAUTHENTICATED"
    assert re.fullmatch(r"[0-9a-f]{32}", refused["request_id"])
    assert "caller" not in refused


async def test_access_log_of_an_ingest_stream_counts_its_readings(
    configure_logs: ConfigureLogs, authenticated_stub: Stub
) -> None:
    output = configure_logs()
    requests = [pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 3)) for _ in range(2)]

    async def stream() -> AsyncIterator[pb.IngestReadingsRequest]:
        for request in requests:
            yield request

    await authenticated_stub.IngestReadings(stream(), metadata=metadata(CANARY_KEY))

    [entry] = await access_entries_of(output, 1)
    assert (entry["status"], entry["caller"], entry["messages"], entry["readings"]) == (
        "OK",
        "billing-loader",
        2,
        6,
    )


async def test_health_checks_are_logged_only_at_debug(
    configure_logs: ConfigureLogs, database: Database
) -> None:
    output = configure_logs()
    async with (
        grpc_server(database, server_config()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert access_entries(output) == []
        logging.getLogger().setLevel(logging.DEBUG)
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        [entry] = await access_entries_of(output, 1)
    assert (entry["method"], entry["status"], entry["level"]) == (
        "/grpc.health.v1.Health/Check",
        "OK",
        "DEBUG",
    )


def assert_no_secret(text: str) -> None:
    for secret in (CANARY_KEY, UNKNOWN_CANARY_KEY, CANARY_PASSWORD, CANARY_URL):
        assert secret not in text


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_calls_with_keys_leave_no_secret_in_the_log(
    log_format: str, configure_logs: ConfigureLogs, authenticated_stub: Stub
) -> None:
    output = configure_logs(log_level="DEBUG", log_format=log_format, database_url=CANARY_URL)
    await authenticated_stub.IngestReadings(
        iter([pb.IngestReadingsRequest(readings=hourly_readings("m1", "2025-01-01", 2))]),
        metadata=metadata(CANARY_KEY),
    )
    query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_HOURLY)
    await authenticated_stub.QueryAggregates(query, metadata=metadata(CANARY_KEY))
    for refused in (metadata(UNKNOWN_CANARY_KEY), (("authorization", f"Basic {CANARY_KEY}"),)):
        with pytest.raises(grpc.aio.AioRpcError):
            await authenticated_stub.QueryAggregates(query, metadata=refused)

    text = output.getvalue()
    assert text.count("QueryAggregates") >= 3
    assert_no_secret(text)


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_secrets_logged_by_mistake_are_scrubbed(
    log_format: str, configure_logs: ConfigureLogs, authenticated_stub: Stub
) -> None:
    output = configure_logs(log_format=log_format, database_url=CANARY_URL)
    query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_HOURLY)
    # A caller that puts its key into the request id.
    await authenticated_stub.QueryAggregates(query, metadata=metadata(CANARY_KEY, request_id=CANARY_KEY))
    logger = logging.getLogger("tests.logs")
    logger.info("connecting to %s", CANARY_URL, extra={"dsn": CANARY_URL})
    logger.info("metadata %s", metadata(UNKNOWN_CANARY_KEY), extra={"headers": {"key": CANARY_KEY}})
    try:
        raise ConnectionError(f"password authentication failed: {CANARY_PASSWORD}")
    except ConnectionError:
        logger.exception("the database refused us")

    text = output.getvalue()
    assert_no_secret(text)
    assert text.count(REDACTED) >= 5
    assert "the database refused us" in text


def test_a_short_password_is_scrubbed_only_within_its_url(configure_logs: ConfigureLogs) -> None:
    output = configure_logs(database_url="postgresql://app:1234@db/timeseries")
    logging.getLogger("tests.logs").info("url postgresql://app:1234@db/timeseries; 1234 readings")
    assert json_lines(output)[0]["message"] == f"url {REDACTED}; 1234 readings"


def handled(server: RunningServer, method: str) -> dict[str, float]:
    """How many calls of the method the server counted, by status code."""
    counts: dict[str, float] = {}
    for metric in server.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "grpc_server_handled_total" and sample.labels["grpc_method"] == method:
                counts[sample.labels["grpc_code"]] = sample.value
    return {code: count for code, count in counts.items() if count}


async def test_a_query_answered_after_its_deadline_is_logged_and_counted_as_deadline_exceeded(
    configure_logs: ConfigureLogs, server: RunningServer, stub: Stub
) -> None:
    """A page of 10,000 buckets takes a while to build without a pause in which gRPC could
    cancel the handler: deadlines that pass meanwhile find a handler that returns an answer
    nobody can receive. That call ended DEADLINE_EXCEEDED, whatever the handler returned."""
    await stub.IngestReadings(
        iter([pb.IngestReadingsRequest(readings=hourly_readings("m1", "2024-01-01", 10_000))])
    )
    query = pb.QueryAggregatesRequest(series_id="m1", granularity=pb.GRANULARITY_HOURLY, page_size=10_000)
    durations = []
    for _ in range(3):
        started = time.monotonic()
        await stub.QueryAggregates(query)
        durations.append(time.monotonic() - started)
    duration = min(durations)
    output = configure_logs()
    # Deadlines from a fifth of a query's time to past its end.
    timeouts = {f"q{number}": duration * (0.2 + number / 40) for number in range(48)}
    for request_id, timeout in timeouts.items():
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stub.QueryAggregates(query, timeout=timeout, metadata=(("x-request-id", request_id),))

    entries = await access_entries_of(output, len(timeouts))
    ok_too_late = {
        entry["request_id"]: (entry["duration_ms"], round(timeouts[entry["request_id"]] * 1000, 3))
        for entry in entries
        if entry["status"] == "OK" and entry["duration_ms"] > timeouts[entry["request_id"]] * 1000
    }
    assert ok_too_late == {}
    logged = Counter(entry["status"] for entry in entries)
    assert logged["DEADLINE_EXCEEDED"] > 0
    assert handled(server, "QueryAggregates") == {
        "OK": 3 + logged["OK"],
        "DEADLINE_EXCEEDED": logged["DEADLINE_EXCEEDED"],
    }
    # gRPC never tried to send such an answer, so it logged no ExecuteBatchError either.
    assert [entry for entry in json_lines(output) if entry["level"] == "ERROR"] == []
