"""Server reflection under both names clients ask for: grpc.reflection.v1 and v1alpha.

grpcio-reflection ships only v1alpha. v1 is the same service with the same messages and field
numbers under another package, so one servicer answers both, and v1's descriptor is v1alpha's
renamed (tools describe every service the listing names).
"""

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's reflection.proto, moved to the v1 package."""
    v1alpha_prefix, v1_prefix = f".{reflection_pb2.DESCRIPTOR.package}.", f".{V1_PACKAGE}."
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    v1.name, v1.package = _V1_FILE, V1_PACKAGE
    # Its Java and Go package names, and its deprecation, belong to v1alpha.
    v1.ClearField("options")
    for message in v1.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # message fields; setting it on others would make them so
                field.type_name = field.type_name.replace(v1alpha_prefix, v1_prefix)
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(v1alpha_prefix, v1_prefix)
            method.output_type = method.output_type.replace(v1alpha_prefix, v1_prefix)
    return v1


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection, v1 and v1alpha, listing the named services and itself."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:  # not yet added by an earlier server of this process
        pool.Add(_v1_descriptor())
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME], pool=pool
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME, v1_handlers),))
