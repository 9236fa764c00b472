"""Rebuilding a gRPC method handler around new behaviour, for the server's interceptors."""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

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

    if isinstance(handler, RequestStreamHandler):
        behaviour = handler.stream_stream or handler.stream_unary
        assert behaviour is not None
        wrapped = streaming(behaviour) if handler.response_streaming else unary_response(behaviour)
        return RequestStreamHandler(handler.declared, wrapped)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), parse, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), parse, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), parse, serialize)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), parse, serialize)
    return handler


def run_first(handler: Handler, first: Callable[[], None]) -> Handler:
    """The same method, calling `first()` as its behaviour starts: inside the call's context
    (its call record, its span), which the interceptor that decides does not run in."""

    def unary_response(behaviour: Behaviour) -> Behaviour:
        async def started(request: Any, context: Any) -> Any:
            first()
            response = behaviour(request, context)
            return await response if inspect.isawaitable(response) else response

        return started

    def streaming_response(behaviour: Behaviour) -> Behaviour:
        async def started(request: Any, context: Any) -> AsyncIterator[Any]:
            first()
            async for response in behaviour(request, context):
                yield response

        return started

    return rewrap_handler(handler, unary_response, streaming_response)


class RequestStreamHandler(grpc.RpcMethodHandler):  # type: ignore[type-arg]
    """A method's handler that takes the request as a stream, whatever the method's kind.

    gRPC reads a single request in full before it calls a handler, but reads a stream only as
    the handler iterates it: so the interceptors can admit or refuse a call (and count it
    against a limit) before its body is received into memory. `declared` is the method's own
    handler, whose kind (unary, ...) the metrics report.
    """

    def __init__(self, declared: Handler, behaviour: Behaviour) -> None:
        self.declared = declared
        self.request_streaming = True
        self.response_streaming = declared.response_streaming
        self.request_deserializer = declared.request_deserializer
        self.response_serializer = declared.response_serializer
        self.unary_unary = None
        self.unary_stream = None
        self.stream_unary = None if declared.response_streaming else behaviour
        self.stream_stream = behaviour if declared.response_streaming else None


def declared_handler(handler: Handler) -> Handler:
    """The method's own handler, also when its request is taken as a stream."""
    return handler.declared if isinstance(handler, RequestStreamHandler) else handler


async def _the_request(request_iterator: AsyncIterator[Any], context: Any) -> Any:
    async for request in request_iterator:
        return request
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: the call carried no request message")


def request_as_stream(handler: Handler) -> Handler:
    """The same method, reading its single request only when its behaviour runs (a method that
    takes a stream already is returned as it is)."""
    if handler.request_streaming:
        return handler
    if handler.unary_unary is not None:
        respond = handler.unary_unary

        async def unary(request_iterator: AsyncIterator[Any], context: Any) -> Any:
            response = respond(await _the_request(request_iterator, context), context)
            return await response if inspect.isawaitable(response) else response

        return RequestStreamHandler(handler, unary)
    stream = handler.unary_stream
    assert stream is not None
    if inspect.iscoroutinefunction(stream):
        # Writes its responses with context.write().
        async def written(request_iterator: AsyncIterator[Any], context: Any) -> None:
            await stream(await _the_request(request_iterator, context), context)

        return RequestStreamHandler(handler, written)

    async def streaming(request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        responses = cast(AsyncIterator[Any], stream(await _the_request(request_iterator, context), context))
        async for response in responses:
            yield response

    return RequestStreamHandler(handler, streaming)


def refusing_handler(handler: Handler, refuse: Callable[[Any], Awaitable[None]]) -> Handler:
    """A handler for the same method that calls `refuse(context)` (which aborts) without ever
    reading the request."""

    async def refused(request_iterator: Any, context: Any) -> None:
        await refuse(context)

    async def refused_stream(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        await refuse(context)
        return
        yield  # pragma: no cover (makes this an async generator)

    return RequestStreamHandler(
        declared_handler(handler), refused_stream if handler.response_streaming else refused
    )
