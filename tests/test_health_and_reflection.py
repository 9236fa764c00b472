"""The standard health service and server reflection (v1 and v1alpha), as grpcurl uses them."""

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.conftest import server_config
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

SERVICE = "timeseries.v1.TimeseriesAggregationService"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"

Ask = Callable[[reflection_pb2.ServerReflectionRequest], Any]


async def test_health_reports_serving_for_the_server_and_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    listed = await health.List(health_pb2.HealthListRequest())
    assert {name: response.status for name, response in listed.statuses.items()} == {
        "": health_pb2.HealthCheckResponse.SERVING,
        SERVICE: health_pb2.HealthCheckResponse.SERVING,
    }


async def test_an_unknown_service_is_not_found_with_a_bounded_message(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    name = "no.such.Service" + "z" * (1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service=name))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value
    message = raised.value.details() or ""
    assert message.startswith("service: unknown service 'no.such.Service")
    assert len(message.encode()) < 1024


def reflection_client(channel: grpc.aio.Channel, service: str) -> Ask:
    """One request, one response, on the given reflection service. v1 differs from v1alpha only
    in its package name, so the v1alpha messages encode v1 requests and decode v1 responses."""
    info = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def ask(request: reflection_pb2.ServerReflectionRequest) -> Any:
        async for response in info(iter([request])):
            return response
        raise AssertionError("no reflection response")

    return ask


@pytest.mark.parametrize("service", [REFLECTION_V1, REFLECTION_V1ALPHA])
async def test_reflection_lists_and_describes_the_service(channel: grpc.aio.Channel, service: str) -> None:
    ask = reflection_client(channel, service)

    listing = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {listed.name for listed in listing.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", REFLECTION_V1, REFLECTION_V1ALPHA} <= names
    described = await ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    assert described.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize("service", [REFLECTION_V1, REFLECTION_V1ALPHA])
async def test_reflection_describes_both_reflection_services(channel: grpc.aio.Channel, service: str) -> None:
    # Tools such as grpcui describe every service the listing names.
    ask = reflection_client(channel, service)

    for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
        described = await ask(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=f"{package}.ServerReflection")
        )
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(serialized)
            for serialized in described.file_descriptor_response.file_descriptor_proto
        ]
        assert [file.package for file in files] == [package]
        assert [service.name for service in files[0].service] == ["ServerReflection"]
        messages = {message.name for message in files[0].message_type}
        assert {"ServerReflectionRequest", "ServerReflectionResponse"} <= messages


async def test_reflection_turned_off_is_unimplemented_and_health_stays(database: Database) -> None:
    async with (
        grpc_server(database, server_config(reflection=False)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        for service in (REFLECTION_V1, REFLECTION_V1ALPHA):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await reflection_client(channel, service)(
                    reflection_pb2.ServerReflectionRequest(list_services="")
                )
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
