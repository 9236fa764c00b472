"""Every RPC of the proto's services is registered: a running server answers each one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.descriptor import MethodDescriptor

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

METHODS = [method for service in pb.DESCRIPTOR.services_by_name.values() for method in service.methods]
# The encoding of a message with no field set, whatever its type.
EMPTY_MESSAGE = b""


def as_is(message: bytes) -> bytes:
    """Send and receive messages as their encoded bytes."""
    return message


async def call_with_an_empty_message(channel: grpc.aio.Channel, method: MethodDescriptor) -> None:
    """Call a method with one empty request message, whatever its streaming kind."""
    path = f"/{method.containing_service.full_name}/{method.name}"

    async def requests() -> AsyncIterator[bytes]:
        yield EMPTY_MESSAGE

    if method.client_streaming and method.server_streaming:
        async for _ in channel.stream_stream(path, as_is, as_is)(requests()):
            pass
    elif method.client_streaming:
        await channel.stream_unary(path, as_is, as_is)(requests())
    elif method.server_streaming:
        async for _ in channel.unary_stream(path, as_is, as_is)(EMPTY_MESSAGE):
            pass
    else:
        await channel.unary_unary(path, as_is, as_is)(EMPTY_MESSAGE)


def test_the_proto_defines_the_rpcs_the_readme_lists() -> None:
    assert {method.full_name for method in METHODS} >= {
        "timeseries.v1.TimeseriesAggregationService.IngestReadings",
        "timeseries.v1.TimeseriesAggregationService.QueryAggregates",
        "timeseries.v1.TimeseriesAggregationService.ListQueryHistory",
    }


@pytest.mark.parametrize("method", METHODS, ids=[method.full_name for method in METHODS])
async def test_the_server_answers_every_rpc_of_the_proto(
    channel: grpc.aio.Channel, method: MethodDescriptor
) -> None:
    code = grpc.StatusCode.OK
    try:
        await call_with_an_empty_message(channel, method)
    except grpc.aio.AioRpcError as error:
        code = error.code()

    # An empty request may well be refused (INVALID_ARGUMENT), but not as unknown.
    assert code != grpc.StatusCode.UNIMPLEMENTED, f"{method.full_name} is not registered"
