"""Rebuilding a gRPC method handler around new behaviour, for the server's interceptors."""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behaviour: TypeAlias = Callable[..., Any]
Wrap: TypeAlias = Callable[[Behaviour], Behaviour]


def rewrap_handler(handler: Handler, unary_response: Wrap, streaming_response: Wrap) -> Handler:
    """The same method with its behaviour wrapped: by `unary_response` when it is a coroutine
    (one response, or a stream written with context.write()), by `streaming_response` when it
    yields its responses."""
    parse, serialize = handler.request_deserializer, handler.response_serializer

    def streaming(behaviour: Behaviour) -> Behaviour:
        wrap = unary_response if inspect.iscoroutinefunction(behaviour) else streaming_response
        return wrap(behaviour)

    if isinstance(handler, RefusingHandler):
        refusal = handler.stream_stream or handler.stream_unary
        assert refusal is not None
        wrapped = streaming(refusal) if handler.response_streaming else unary_response(refusal)
        return RefusingHandler(handler.declared, wrapped)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), parse, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), parse, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), parse, serialize)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), parse, serialize)
    return handler


class RefusingHandler(grpc.RpcMethodHandler):  # type: ignore[type-arg]
    """A refused call's handler: it takes the request as a stream, and never reads it.

    gRPC reads a single request in full before calling a handler, but reads a stream only as
    the handler iterates it, so a refused caller's body is never received into memory.
    `declared` is the method's own handler, whose kind (unary, ...) the metrics report.
    """

    def __init__(self, declared: Handler, behaviour: Behaviour) -> None:
        self.declared = declared
        self.request_streaming = True
        self.response_streaming = declared.response_streaming
        self.request_deserializer = None
        self.response_serializer = declared.response_serializer
        self.unary_unary = None
        self.unary_stream = None
        self.stream_unary = None if declared.response_streaming else behaviour
        self.stream_stream = behaviour if declared.response_streaming else None


def declared_handler(handler: Handler) -> Handler:
    """The method's own handler, also when the call is refused."""
    return handler.declared if isinstance(handler, RefusingHandler) else handler


def refusing_handler(handler: Handler, refuse: Callable[[Any], Awaitable[None]]) -> Handler:
    """A handler for the same method that calls `refuse(context)` (which aborts) without ever
    reading the request."""

    async def refused(request_iterator: Any, context: Any) -> None:
        await refuse(context)

    async def refused_stream(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        await refuse(context)
        return
        yield  # pragma: no cover (makes this an async generator)

    return RefusingHandler(handler, refused_stream if handler.response_streaming else refused)
