"""A gRPC server interceptor that counts, times, traces and access-logs every call.

It wraps each method handler, so it sees the status a call ends with: the one a handler
aborted with (read back from the context), CANCELLED or DEADLINE_EXCEEDED when the call is
cancelled, DEADLINE_EXCEEDED as well when a handler answers after the deadline (gRPC can
cancel a handler only while it waits), UNKNOWN when a handler raises. It opens the call's
record before anything else runs and reports what authentication and the handler wrote into it.

The call's trace span is started by a second interceptor, installed after authentication, so
that only the calls it lets through are traced: a refused caller can neither make the server
export spans nor place its calls in a trace of its choosing (its traceparent is not logged).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from timeseries_aggregation.observability.metrics import ServiceMetrics
from timeseries_aggregation.observability.tracing import ServerSpan, active_tracer, caller_trace_id
from timeseries_aggregation.transport.call_record import open_call_record
from timeseries_aggregation.transport.handlers import (
    Behaviour,
    Handler,
    declared_handler,
    rewrap_handler,
    run_first,
)
from timeseries_aggregation.transport.registration import SERVICE_NAME
from timeseries_aggregation.transport.status import Context

access_logger = logging.getLogger("timeseries_aggregation.access")

INGEST_METHOD = f"/{SERVICE_NAME}/IngestReadings"
REQUEST_ID_METADATA = "x-request-id"
# A request id from the caller is logged as sent only when it is short, printable ASCII.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Probes call these every few seconds: their access logs are DEBUG, not INFO.
_QUIET_SERVICES = frozenset({"grpc.health.v1.Health"})
# Only the service's calls are traced: health probes every few seconds would bury them, and
# reflection is a tool's question about the API.
_TRACED_PREFIX = f"/{SERVICE_NAME}/"
# Codes that say the server, not the caller, has a problem: logged as warnings.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def _grpc_type(handler: Handler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _past_deadline(context: Context) -> bool:
    """Whether the call's deadline has passed (never for a call without one)."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


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
    return grpc.StatusCode.DEADLINE_EXCEEDED if _past_deadline(context) else grpc.StatusCode.CANCELLED


class _AnswerTooLate(asyncio.CancelledError):
    """Raised instead of returning an answer after the call's deadline: gRPC ends such a call
    DEADLINE_EXCEEDED and could not send the answer (it would log an ExecuteBatchError);
    as a cancellation, gRPC leaves the call to that end quietly."""


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
        self.record = open_call_record()
        self._span: ServerSpan | None = None
        # Whether the call is the service's and reached its handler, past authentication.
        self._admitted = False
        _observed.set(self)
        interceptor.metrics.rpcs_started.labels(**self._labels).inc()
        self._started = time.perf_counter()

    def admit(self) -> None:
        """The call reaches its handler: if it is the service's, trace it from here on (with
        tracing on) and log its caller's trace id."""
        if not self._method.startswith(_TRACED_PREFIX):
            return
        self._admitted = True
        tracer = active_tracer()
        if tracer is not None and self._span is None:
            self._span = ServerSpan(tracer, self._method, self._context.invocation_metadata() or ())

    def finish_after_deadline(self) -> None:
        """Account for a handler that returned once the deadline had passed: no answer reaches
        the caller, so the call ended DEADLINE_EXCEEDED; except a stream, whose outcome was
        decided when it committed (the client left before it heard, as after a cancel then)."""
        if self._method == INGEST_METHOD:
            self.record.committed_after_client_left = True
            self.finish(None)
        else:
            self.finish(_AnswerTooLate())

    def finish(self, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self._started
        code = _status(self._context, error)
        metrics = self._interceptor.metrics
        metrics.rpcs_handled.labels(**self._labels, grpc_code=code.name).inc()
        metrics.rpc_seconds.labels(**self._labels).observe(seconds)
        if self._method == INGEST_METHOD:
            for readings, messages in self.record.message_sizes.items():
                for _ in range(messages):
                    metrics.ingest_message_readings.observe(readings)
            if code == grpc.StatusCode.OK:
                metrics.readings_ingested.inc(self.record.readings)
                metrics.rows_written.inc(self.record.rows_written)
        if self._span is not None:
            self._span.finish(code.value[0], code.name, code in _SERVER_FAULTS, self._trace_attributes())
        self._log(code, seconds)

    def _trace_attributes(self) -> dict[str, str | int]:
        """What the call's span carries besides the RPC's name and status: never a reading's
        value, a key or a secret."""
        attributes: dict[str, str | int] = {"request_id": self.request_id, **self.record.trace_attributes}
        if self.record.caller:
            attributes["timeseries.caller"] = self.record.caller
        if self._method == INGEST_METHOD:
            attributes["timeseries.messages"] = self.record.messages
            attributes["timeseries.readings"] = self.record.readings
        return attributes

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
        trace_id: str | None = None
        if self._span is not None:
            trace_id = self._span.trace_id
        elif self._admitted:  # a refused caller's traceparent would put its line in any trace
            trace_id = caller_trace_id(self._context.invocation_metadata() or ())
        if trace_id is not None:
            fields["trace_id"] = trace_id
        if self.record.caller:
            fields["caller"] = self.record.caller
        if self._method == INGEST_METHOD:
            fields["messages"] = self.record.messages
            fields["readings"] = self.record.readings
            if self.record.committed_after_client_left:
                # OK is the outcome; the client gave up while the commit was in flight.
                fields["client_left_before_answer"] = True
        access_logger.log(
            level, "%s %s in %.1f ms", self._labels["grpc_method"], code.name, seconds * 1000, extra=fields
        )


# The call being observed in this task (gRPC runs each call in one), for TracingInterceptor.
_observed: ContextVar[_Call | None] = ContextVar("timeseries_aggregation_observed_call", default=None)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call into the metrics and writes one access log line per call.

    Install it first, so that it sees the calls other interceptors refuse.
    """

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # A refused call's handler takes its request as a stream; the method's kind is reported.
        grpc_type = _grpc_type(declared_handler(handler))

        def unary_response(behaviour: Behaviour) -> Behaviour:
            async def observed(request: Any, context: Context) -> Any:
                call = _Call(self, method, grpc_type, context)
                try:
                    response = behaviour(request, context)
                    if inspect.isawaitable(response):
                        response = await response
                except BaseException as error:
                    call.finish(error)
                    raise
                if _past_deadline(context):
                    call.finish_after_deadline()
                    raise _AnswerTooLate
                call.finish(None)
                return response

            return observed

        def streaming_response(behaviour: Behaviour) -> Behaviour:
            async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
                call = _Call(self, method, grpc_type, context)
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as error:
                    call.finish(error)
                    raise
                if _past_deadline(context):
                    call.finish_after_deadline()
                    raise _AnswerTooLate
                call.finish(None)

            return observed

        return rewrap_handler(handler, unary_response, streaming_response)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Admits each call that reaches its handler: only those are traced, and only their caller's
    trace id is logged.

    Install it after ObservabilityInterceptor (which finishes the span with the call's status)
    and after authentication, so that calls refused there are not traced.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        def admit() -> None:
            call = _observed.get()
            if call is not None:
                call.admit()

        return run_first(handler, admit)
