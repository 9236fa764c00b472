"""OpenTelemetry tracing, end to end: the service configured only by the standard OTEL_*
variables exports over OTLP to a real receiver (an in-process gRPC TraceService), its server
spans continue the caller's trace as sent by the client library, and the database work is
traced beneath them with nothing secret in any attribute."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.otlp_receiver import Receiver, attribute_values, otlp_receiver
from tests.conftest import server_config
from tests.support import add_series, eventually, reading
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.cli import main
from timeseries_aggregation.client import AsyncTimeseriesClient, Reading
from timeseries_aggregation.client.trace_context import trace_metadata
from timeseries_aggregation.config import AUTH_API_KEY, ConfigError, load_config, tracing_requested
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.observability.tracing import caller_trace_id
from timeseries_aggregation.storage.database import Database

# Tracing touches the transport and every storage path: it runs on each engine.

KEY = new_key()
SERVICE = "/timeseries.v1.TimeseriesAggregationService"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    async with otlp_receiver() as started:
        yield started


@pytest.fixture
def caller() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """The calling service's own tracing: an SDK provider of its own, kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _otel_environment(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "aggregation-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


def _children(spans: list[Span], parent: Span) -> list[Span]:
    return [span for span in spans if span.parent_span_id == parent.span_id]


def _descendants(spans: list[Span], parent: Span) -> list[Span]:
    found = []
    for child in _children(spans, parent):
        found += [child, *_descendants(spans, child)]
    return found


async def test_server_spans_continue_the_callers_trace_with_the_database_work_beneath(
    database: Database,
    receiver: tuple[Receiver, int],
    caller: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collected, port = receiver
    _otel_environment(monkeypatch, port)
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("billing-loader", frozenset({Scope.INGEST, Scope.QUERY}), KEY) + "\n")
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys, tracing=True)
    provider, caller_spans = caller
    tracer = provider.get_tracer("caller")
    start = datetime(2025, 3, 1, tzinfo=UTC)
    readings = [Reading("traced-meter", start + timedelta(hours=hour), 1.5) for hour in range(48)]
    with caplog.at_level(logging.INFO, logger="timeseries_aggregation.access"):
        async with (
            grpc_server(database, config) as running,
            AsyncTimeseriesClient(f"127.0.0.1:{running.port}", api_key=KEY) as client,
        ):
            with tracer.start_as_current_span("nightly import"):
                await client.ingest(readings, batch_size=20)
            with tracer.start_as_current_span("billing run"):
                buckets = [bucket async for bucket in client.query("traced-meter", "daily")]
        # Leaving the server flushed its spans to the receiver.
    assert [bucket.reading_count for bucket in buckets] == [24, 24]

    by_name = {span.name: span for span in caller_spans.get_finished_spans()}
    spans = [span for service, span in collected.spans if service == "aggregation-under-test"]
    assert len(spans) == len(collected.spans)
    servers = {span.name: span for span in spans if span.kind == Span.SPAN_KIND_SERVER}
    for method, parent_name in (("IngestReadings", "nightly import"), ("QueryAggregates", "billing run")):
        server = servers[f"{SERVICE}/{method}"]
        parent = by_name[parent_name].get_span_context()
        assert parent is not None
        assert server.trace_id.hex() == format(parent.trace_id, "032x")
        assert server.parent_span_id.hex() == format(parent.span_id, "016x")
        attributes = attribute_values(server.attributes)
        assert attributes["rpc.system"] == "grpc"
        assert attributes["rpc.method"] == method
        assert attributes["rpc.grpc.status_code"] == 0
        assert attributes["timeseries.caller"] == "billing-loader"
        assert attributes["timeseries.series_count"] == 1
        beneath = _descendants(spans, server)
        assert all(span.trace_id == server.trace_id for span in beneath)
        assert all(attribute_values(span.attributes)["db.system.name"] == "postgresql" for span in beneath)
        names = [span.name for span in beneath]
        assert "pool acquire" in names
        if method == "IngestReadings":
            assert attributes["timeseries.readings"] == 48
            assert attributes["timeseries.messages"] == 3
            written = [span for span in beneath if span.name in ("copy chunk", "upsert chunk")]
            chunk_readings = [attribute_values(span.attributes)["timeseries.readings"] for span in written]
            assert sum(int(str(readings)) for readings in chunk_readings) == 48
            assert {"catalog and rollups", "commit"} <= set(names)
        else:
            assert attributes["timeseries.granularity"] == "DAY_OF_MONTH"
            assert attributes["timeseries.bucket_count"] == 2
            assert "query page" in names

    # Nothing secret or measured travels: no key, no reading value, no database URL.
    for span in spans:
        for value in attribute_values(span.attributes).values():
            text = str(value)
            assert KEY not in text
            assert "postgresql://" not in text
            assert text != "1.5"

    # The access log names the trace, so log lines and traces join.
    logged = {getattr(each, "method", ""): each for each in caplog.records if hasattr(each, "trace_id")}
    query_span = servers[f"{SERVICE}/QueryAggregates"]
    assert getattr(logged[f"{SERVICE}/QueryAggregates"], "trace_id", None) == query_span.trace_id.hex()


async def test_an_untraced_server_logs_the_callers_trace_id(
    database: Database, caller: tuple[TracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    provider, _ = caller
    await add_series(database, "nobody")
    with caplog.at_level(logging.INFO, logger="timeseries_aggregation.access"):
        async with (
            grpc_server(database, server_config()) as running,
            AsyncTimeseriesClient(f"127.0.0.1:{running.port}") as client,
        ):
            with provider.get_tracer("caller").start_as_current_span("report") as span:
                assert [bucket async for bucket in client.query("nobody", "monthly")] == []
    [record] = [each for each in caplog.records if getattr(each, "method", "").endswith("QueryAggregates")]
    assert getattr(record, "trace_id", None) == format(span.get_span_context().trace_id, "032x")


@pytest.mark.parametrize(
    ("environment", "requested"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_on_when_the_environment_names_an_exporter(
    environment: dict[str, str], requested: bool
) -> None:
    assert tracing_requested(environment) is requested


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: zipkin"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ],
)
def test_an_exporter_the_service_lacks_is_refused_by_name(environment: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config({"TIMESERIES_AGGREGATION_AUTH_MODE": "none", **environment})


def test_the_start_up_line_names_the_collector_without_credentials() -> None:
    from timeseries_aggregation.observability.tracing import _endpoint_for_log

    shown = _endpoint_for_log(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:s3cret@collector.example:4317/v1"}
    )
    assert shown == "https://collector.example:4317"
    assert json.dumps(shown).count("s3cret") == 0


async def test_a_collector_that_is_down_costs_the_calls_nothing_and_shutdown_little(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A port nobody listens on: every export is refused, and retried.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    _otel_environment(monkeypatch, closed_port)
    readings = [Reading("meter", datetime(2025, 1, 1, hour, tzinfo=UTC), 2.0) for hour in range(24)]
    async with grpc_server(database, server_config(tracing=True)) as running:
        async with AsyncTimeseriesClient(f"127.0.0.1:{running.port}") as client:
            for _ in range(3):
                assert (await client.ingest(readings)).readings_received == 24
                totals = [bucket.total_quantity_kwh async for bucket in client.query("meter", "daily")]
                assert totals == [48.0]
        stopping = time.monotonic()
    # The flush gives up after two seconds instead of retrying for the exporter's ten.
    assert time.monotonic() - stopping < 5


async def test_a_cancelled_stream_is_traced_as_cancelled_without_a_commit(
    database: Database,
    receiver: tuple[Receiver, int],
    caller: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected, port = receiver
    _otel_environment(monkeypatch, port)
    provider, _ = caller
    sent = asyncio.Event()

    async def messages() -> AsyncIterator[pb.IngestReadingsRequest]:
        yield pb.IngestReadingsRequest(readings=[reading("meter", "2025-01-01T00:00:00Z", 1.0)])
        sent.set()
        await asyncio.sleep(3600)  # the caller gives up while the stream is open

    async with (
        grpc_server(database, server_config(tracing=True)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)

        def ingest_calls(counter: str) -> float:
            return sum(
                sample.value
                for metric in running.metrics.registry.collect()
                for sample in metric.samples
                if sample.name == counter and sample.labels.get("grpc_method") == "IngestReadings"
            )

        async def the_server_has(counter: str) -> None:
            assert ingest_calls(counter) == 1

        with provider.get_tracer("caller").start_as_current_span("import"):
            call = stub.IngestReadings(messages(), metadata=trace_metadata())
            await sent.wait()
            # Cancelled once the server runs the call (and its span), not before it arrives.
            await eventually(lambda: the_server_has("grpc_server_started_total"), interval=0.01)
            call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The server sees the cancel a moment later; its span ends with the call.
        await eventually(lambda: the_server_has("grpc_server_handled_total"), interval=0.01)
    spans = [span for _, span in collected.spans]
    [server] = [span for span in spans if span.kind == Span.SPAN_KIND_SERVER]
    assert attribute_values(server.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert "commit" not in {span.name for span in _descendants(spans, server)}


async def test_the_cli_continues_the_trace_of_its_environment(
    database: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    monkeypatch.setenv("TRACEPARENT", f"00-{trace_id}-00f067aa0ba902b7-01")
    await add_series(database, "nobody")
    with caplog.at_level(logging.INFO, logger="timeseries_aggregation.access"):
        async with grpc_server(database, server_config()) as running:
            target = f"127.0.0.1:{running.port}"
            argv = ["query", "--series-id", "nobody", "--granularity", "monthly", "--target", target]
            assert await asyncio.to_thread(main, argv) == 0
    [record] = [each for each in caplog.records if getattr(each, "method", "").endswith("QueryAggregates")]
    assert getattr(record, "trace_id", None) == trace_id


@pytest.mark.parametrize(
    "traceparent",
    [
        "not a traceparent",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # the invalid all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a version that may not be used
        "00-" + "a" * 4000,
    ],
)
async def test_a_hostile_traceparent_starts_a_trace_of_its_own(
    database: Database,
    receiver: tuple[Receiver, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    traceparent: str,
) -> None:
    collected, port = receiver
    _otel_environment(monkeypatch, port)
    await add_series(database, "m")
    with caplog.at_level(logging.INFO, logger="timeseries_aggregation.access"):
        async with (
            grpc_server(database, server_config(tracing=True)) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
            request = pb.QueryAggregatesRequest(series_id="m", granularity=pb.GRANULARITY_MONTHLY)
            response = await stub.QueryAggregates(request, metadata=(("traceparent", traceparent),))
            assert list(response.buckets) == []
    [server] = [span for _, span in collected.spans if span.kind == Span.SPAN_KIND_SERVER]
    assert server.parent_span_id == b""
    assert traceparent[3:35] != server.trace_id.hex()
    [record] = [each for each in caplog.records if getattr(each, "method", "").endswith("QueryAggregates")]
    assert getattr(record, "trace_id", None) == server.trace_id.hex()


@pytest.mark.parametrize(
    ("traceparent", "logged"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
    ],
)
def test_an_untraced_server_logs_only_a_well_formed_callers_trace_id(
    traceparent: str, logged: str | None
) -> None:
    assert caller_trace_id([("traceparent", traceparent)]) == logged


async def test_only_calls_that_pass_authentication_are_traced(
    database: Database,
    receiver: tuple[Receiver, int],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collected, port = receiver
    _otel_environment(monkeypatch, port)
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("dashboard", frozenset({Scope.QUERY}), KEY) + "\n")
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys, tracing=True)
    chosen = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = ("traceparent", f"00-{chosen}-00f067aa0ba902b7-01")
    granted, guessed = ("authorization", f"Bearer {KEY}"), ("authorization", "Bearer tsa_guessed")
    await add_series(database, "m")
    caplog.set_level(logging.DEBUG, logger="timeseries_aggregation.access")
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        query = pb.QueryAggregatesRequest(series_id="m", granularity=pb.GRANULARITY_MONTHLY)
        delete = pb.DeleteReadingsRequest(selector=pb.SeriesSelector(series_ids=["m"]))
        for refused, code in (
            (stub.QueryAggregates(query, metadata=(traceparent,)), grpc.StatusCode.UNAUTHENTICATED),
            (stub.QueryAggregates(query, metadata=(traceparent, guessed)), grpc.StatusCode.UNAUTHENTICATED),
            (stub.DeleteReadings(delete, metadata=(traceparent, granted)), grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await refused
            assert raised.value.code() == code
        # Probes and tools, open to all, are not traced either.
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=(traceparent,)
        )
        reflection = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        listing = reflection(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=(traceparent,)
        )
        assert [response async for response in listing]
        await stub.QueryAggregates(query, metadata=(granted,))
    # Leaving the server flushed its spans to the receiver: those of the one accepted call.
    spans = [span for _, span in collected.spans]
    [server] = [span for span in spans if span.kind == Span.SPAN_KIND_SERVER]
    assert server.name == f"{SERVICE}/QueryAggregates"
    assert attribute_values(server.attributes)["timeseries.caller"] == "dashboard"
    assert {span.trace_id for span in spans} == {server.trace_id}
    assert server.trace_id.hex() != chosen
    # Nor does the access log put a refused call in the trace it named.
    access = [each for each in caplog.records if each.name == "timeseries_aggregation.access"]
    logged = [(getattr(each, "status", ""), getattr(each, "trace_id", None)) for each in access]
    assert sorted(logged, key=str) == sorted(
        [
            ("UNAUTHENTICATED", None),
            ("UNAUTHENTICATED", None),
            ("PERMISSION_DENIED", None),
            ("OK", None),  # health, open to all
            ("OK", None),  # reflection, open to all
            ("OK", server.trace_id.hex()),
        ],
        key=str,
    )


async def test_an_untraced_server_logs_the_trace_id_of_authenticated_calls_only(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("dashboard", frozenset({Scope.QUERY}), KEY) + "\n")
    chosen = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = ("traceparent", f"00-{chosen}-00f067aa0ba902b7-01")
    await add_series(database, "m")
    query = pb.QueryAggregatesRequest(series_id="m", granularity=pb.GRANULARITY_MONTHLY)
    with caplog.at_level(logging.INFO, logger="timeseries_aggregation.access"):
        async with (
            grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.QueryAggregates(query, metadata=(traceparent,))
            await stub.QueryAggregates(query, metadata=(traceparent, ("authorization", f"Bearer {KEY}")))
    access = [each for each in caplog.records if each.name == "timeseries_aggregation.access"]
    logged = [(getattr(each, "status", ""), getattr(each, "trace_id", None)) for each in access]
    assert logged == [("UNAUTHENTICATED", None), ("OK", chosen)]
