"""A gRPC server interceptor that counts, times and access-logs every call.

It wraps each method handler, so it sees the status a call ends with: the one a handler
aborted with (read back from the context), CANCELLED or DEADLINE_EXCEEDED when the call is
cancelled, UNKNOWN when a handler raises. For IngestReadings it also counts the readings
of every message as the handler reads it.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.api_keys import Scope
from timeseries_aggregation.observability.metrics import ServiceMetrics
from timeseries_aggregation.transport.auth import Authenticator
from timeseries_aggregation.transport.registration import SERVICE_NAME
from timeseries_aggregation.transport.status import Context

access_logger = logging.getLogger("timeseries_aggregation.access")

INGEST_METHOD = f"/{SERVICE_NAME}/IngestReadings"
REQUEST_ID_METADATA = "x-request-id"
# A request id from the caller is logged as sent only when it is short, printable ASCII.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Probes call these every few seconds: their access logs are DEBUG, not INFO.
_QUIET_SERVICES = frozenset({"grpc.health.v1.Health"})
# Codes that say the server, not the caller, has a problem: logged as warnings.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(slots=True)
class CallRecord:
    """What is learned about a call while it runs."""

    caller: str = ""
    messages: int = 0
    readings: int = 0


class CallRecords:
    """The records of the calls in progress, by their context, for code that sees only the context."""

    def __init__(self) -> None:
        self._records: dict[Context, CallRecord] = {}

    def open(self, context: Context) -> CallRecord:
        record = self._records[context] = CallRecord()
        return record

    def close(self, context: Context) -> None:
        self._records.pop(context, None)

    def set_caller(self, context: Context, caller: str) -> None:
        record = self._records.get(context)
        if record is not None:
            record.caller = caller


class CallerRecordingAuthenticator(Authenticator):
    """An Authenticator that also notes, for the access log, the key name a call runs under."""

    def __init__(self, keys_file: Path | None, calls: CallRecords) -> None:
        super().__init__(keys_file)
        self._calls = calls

    def authorize(self, context: Context, scope: Scope) -> str:
        caller = super().authorize(context, scope)
        self._calls.set_caller(context, caller)
        return caller


class _CountedMessages:
    """An ingest request stream that counts the readings of each message as it is read."""

    def __init__(self, requests: AsyncIterable[object], record: CallRecord, metrics: ServiceMetrics) -> None:
        self._requests = requests
        # Made on the first read: gRPC's receiver, once made, warns if a call that was
        # refused before reading never starts it.
        self._iterator: AsyncIterator[object] | None = None
        self._record = record
        self._metrics = metrics

    def __aiter__(self) -> _CountedMessages:
        return self

    async def __anext__(self) -> object:
        if self._iterator is None:
            self._iterator = aiter(self._requests)
        message = await anext(self._iterator)
        if isinstance(message, pb.IngestReadingsRequest):
            readings = len(message.readings) + sum(len(s.time_unix_micros) for s in message.series_readings)
            self._record.messages += 1
            self._record.readings += readings
            self._metrics.ingest_message_readings.observe(readings)
        return message


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def _grpc_type(handler: Handler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _status(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, given what its handler raised (None: it returned)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, Exception):
        return grpc.StatusCode.UNKNOWN
    # Cancelled: by the client, or by gRPC when the deadline passed.
    remaining = context.time_remaining()  # None when the call has no deadline
    return (
        grpc.StatusCode.DEADLINE_EXCEEDED
        if remaining is not None and remaining <= 0
        else grpc.StatusCode.CANCELLED
    )


class _Call:
    """One call being observed: started when created, counted and logged by finish()."""

    def __init__(
        self, interceptor: ObservabilityInterceptor, method: str, grpc_type: str, context: Context
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._context = context
        service, _, name = method.lstrip("/").rpartition("/")
        self._labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": name}
        self._quiet = service in _QUIET_SERVICES
        self.request_id = _request_id(context)
        self.record = interceptor.calls.open(context)
        interceptor.metrics.rpcs_started.labels(**self._labels).inc()
        self._started = time.perf_counter()

    def finish(self, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self._started
        code = _status(self._context, error)
        metrics = self._interceptor.metrics
        metrics.rpcs_handled.labels(**self._labels, grpc_code=code.name).inc()
        metrics.rpc_seconds.labels(**self._labels).observe(seconds)
        if self._method == INGEST_METHOD and code == grpc.StatusCode.OK:
            metrics.readings_ingested.inc(self.record.readings)
        self._interceptor.calls.close(self._context)
        self._log(code, seconds)

    def _log(self, code: grpc.StatusCode, seconds: float) -> None:
        level = logging.WARNING if code in _SERVER_FAULTS else logging.INFO
        if self._quiet and level == logging.INFO:
            level = logging.DEBUG
        if not access_logger.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "method": self._method,
            "status": code.name,
            "duration_ms": round(seconds * 1000, 3),
            "peer": self._context.peer(),
            "request_id": self.request_id,
        }
        if self.record.caller:
            fields["caller"] = self.record.caller
        if self._method == INGEST_METHOD:
            fields["messages"] = self.record.messages
            fields["readings"] = self.record.readings
        access_logger.log(
            level, "%s %s in %.1f ms", self._labels["grpc_method"], code.name, seconds * 1000, extra=fields
        )


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call into the metrics and writes one access log line per call."""

    def __init__(self, metrics: ServiceMetrics, calls: CallRecords) -> None:
        self.metrics = metrics
        self.calls = calls

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        grpc_type = _grpc_type(handler)
        parse, serialize = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._observed(method, grpc_type, handler.unary_unary), parse, serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._observed(method, grpc_type, handler.stream_unary), parse, serialize
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._observed_stream(method, grpc_type, handler.unary_stream), parse, serialize
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._observed_stream(method, grpc_type, handler.stream_stream), parse, serialize
            )
        return handler

    def _observed(self, method: str, grpc_type: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        """A handler with one response: a coroutine that returns it."""

        async def observed(request: Any, context: Context) -> Any:
            call = _Call(self, method, grpc_type, context)
            if method == INGEST_METHOD:
                request = _CountedMessages(request, call.record, self.metrics)
            try:
                response = behaviour(request, context)
                if inspect.isawaitable(response):
                    response = await response
            except BaseException as error:
                call.finish(error)
                raise
            call.finish(None)
            return response

        return observed

    def _observed_stream(
        self, method: str, grpc_type: str, behaviour: Callable[..., Any]
    ) -> Callable[..., Any]:
        """A handler with a response stream, written with context.write() or yielded."""
        if inspect.iscoroutinefunction(behaviour):
            return self._observed(method, grpc_type, behaviour)

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(self, method, grpc_type, context)
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException as error:
                call.finish(error)
                raise
            call.finish(None)

        return observed
