"""OpenTelemetry tracing: a server span per call that continues the caller's W3C trace
context, and spans beneath it for the database work (pool acquire, each COPY chunk or upsert,
the query statement, commit).

Configured by the standard OTEL_* variables, which the SDK and the OTLP exporter read
themselves (endpoint, headers, certificates, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...).
Whether tracing is on is decided with the rest of the configuration (config.tracing_requested).
Off, no provider exists and every span helper returns at its first line, so an untraced server
pays a function call per span site and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

logger = logging.getLogger(__name__)

# Where an OTLP endpoint for traces may be set, the more specific first.
OTLP_TRACE_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The service.name of the spans unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES give one.
DEFAULT_SERVICE_NAME = "timeseries-aggregation"
_INSTRUMENTATION = "timeseries_aggregation"
# A W3C traceparent header: version (ff is invalid), trace id, parent id, flags (lowercase hex);
# ids of all zeros are invalid.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_FLUSH_AT_EXIT_SECONDS = 2.0

# A call's invocation metadata: (key, value) pairs, values of "-bin" keys in bytes.
Metadata = Iterable[tuple[str, object]]
# The tracer of the server running in this process; None while tracing is off.
_tracer: trace.Tracer | None = None


def _endpoint_for_log(environ: Mapping[str, str]) -> str:
    """Where spans go, without credentials a URL might carry."""
    for name in OTLP_TRACE_ENDPOINTS:
        if environ.get(name, "").strip():
            parts = urlsplit(environ[name].strip())
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{host}{port}" if parts.scheme else host + port
    return "the OTLP exporter's default (localhost:4317)"


@asynccontextmanager
async def tracing(environ: Mapping[str, str]) -> AsyncIterator[trace.Tracer]:
    """Export this process's spans over OTLP while the block runs; flush them at its end."""
    global _tracer
    # Imported here: the SDK and the exporter's modules are loaded by traced servers only.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, but attributes
    # given to it would win: the default name is given only where neither names the service.
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    # The provider reads OTEL_TRACES_SAMPLER(_ARG) itself.
    default_name = {} if named else {"service.name": DEFAULT_SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(default_name))
    exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer(_INSTRUMENTATION)
    _tracer = tracer
    logger.info("tracing: spans exported over OTLP to %s", _endpoint_for_log(environ))
    try:
        yield tracer
    finally:
        _tracer = None
        # The spans still queued get a bounded time to reach the collector; then the exporter
        # stops retrying, so a collector that is down never holds up the server's shutdown.
        # (force_flush's own timeout does not bound the exporter's retries, hence the thread.)
        flush = threading.Thread(target=provider.force_flush, name="flush spans", daemon=True)
        flush.start()
        await asyncio.to_thread(flush.join, _FLUSH_AT_EXIT_SECONDS)
        if flush.is_alive():
            logger.warning("tracing: the collector did not take the last spans in time; they are dropped")
            exporter.shutdown()  # ends its retries and closes its channel, cancelling the export
        await asyncio.to_thread(provider.shutdown)


def active_tracer() -> trace.Tracer | None:
    return _tracer


class ServerSpan:
    """The span of one call on the server, current in the call's context until finished."""

    def __init__(self, tracer: trace.Tracer, method: str, metadata: Metadata) -> None:
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        # From an empty context: a call without a traceparent starts a trace of its own.
        parent = propagate.extract(carrier, context=otel_context.Context())
        service, _, name = method.lstrip("/").rpartition("/")
        self.span = tracer.start_span(
            method,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def finish(
        self, code_value: int, code_name: str, server_fault: bool, attributes: Mapping[str, AttributeValue]
    ) -> None:
        self.span.set_attributes(attributes)
        self.span.set_attribute("rpc.grpc.status_code", code_value)
        if server_fault:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, code_name))
        self.span.end()
        otel_context.detach(self._token)


def caller_trace_id(metadata: Metadata) -> str | None:
    """The trace id of the caller's traceparent header, for the access log of an untraced server."""
    for key, value in metadata:
        if key == "traceparent" and isinstance(value, str):
            match = _TRACEPARENT.fullmatch(value.strip())
            if match:
                return match.group(1)
    return None


@contextmanager
def database_span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[trace.Span | None]:
    """A span of database work beneath the current one (none while tracing is off)."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name,
        kind=trace.SpanKind.CLIENT,
        attributes={"db.system.name": "postgresql", **(attributes or {})},
    ) as span:
        yield span
