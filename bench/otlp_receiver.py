"""A real OTLP trace receiver in the process: a gRPC TraceService on loopback that keeps every
span it is sent, with its service's name. The tracing tests and the bench's tracing section
export to it as the service would to a collector."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def _value(value: AnyValue) -> object:
    return getattr(value, value.WhichOneof("value") or "string_value")


def attribute_values(pairs: object) -> dict[str, object]:
    """OTLP key-value attributes as a dict of plain values."""
    return {pair.key: _value(pair.value) for pair in pairs}  # type: ignore[attr-defined]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps (service name, span) of every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[
            trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse
        ],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = attribute_values(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((str(service), span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[Receiver, int]]:
    """A receiver serving on a free loopback port, and that port."""
    server = grpc.aio.server()
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, port
    finally:
        await server.stop(None)
