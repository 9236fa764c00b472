"""Registers the servicer with parsers that turn undecodable bytes into INVALID_ARGUMENT.

The generated registration lets gRPC answer INTERNAL when a request cannot be parsed; a
malformed request is the caller's error, so here parsing never raises: it yields a marker
that the handler reports as INVALID_ARGUMENT.
"""

from typing import Any

import grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.transport.servicer import TimeseriesAggregationServicer
from timeseries_aggregation.transport.wire import tolerant_parser

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TimeseriesAggregationService"].full_name


def add_service(server: grpc.aio.Server, servicer: TimeseriesAggregationServicer) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "IngestReadings": grpc.stream_unary_rpc_method_handler(
            servicer.IngestReadings,
            request_deserializer=tolerant_parser(pb.IngestReadingsRequest),
            response_serializer=pb.IngestReadingsResponse.SerializeToString,
        ),
        "QueryAggregates": grpc.unary_unary_rpc_method_handler(
            servicer.QueryAggregates,
            request_deserializer=tolerant_parser(pb.QueryAggregatesRequest),
            response_serializer=pb.QueryAggregatesResponse.SerializeToString,
        ),
        "ListQueryHistory": grpc.unary_unary_rpc_method_handler(
            servicer.ListQueryHistory,
            request_deserializer=tolerant_parser(pb.ListQueryHistoryRequest),
            response_serializer=pb.ListQueryHistoryResponse.SerializeToString,
        ),
        "UpdateSeries": grpc.unary_unary_rpc_method_handler(
            servicer.UpdateSeries,
            request_deserializer=tolerant_parser(pb.UpdateSeriesRequest),
            response_serializer=pb.Series.SerializeToString,
        ),
        "DeleteReadings": grpc.unary_unary_rpc_method_handler(
            servicer.DeleteReadings,
            request_deserializer=tolerant_parser(pb.DeleteReadingsRequest),
            response_serializer=pb.DeleteReadingsResponse.SerializeToString,
        ),
        "ListSeries": grpc.unary_unary_rpc_method_handler(
            servicer.ListSeries,
            request_deserializer=tolerant_parser(pb.ListSeriesRequest),
            response_serializer=pb.ListSeriesResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
