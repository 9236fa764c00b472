"""Admission control by class of call, decided before authentication.

gRPC's own `maximum_concurrent_rpcs` counts every call alike, so idle health Watch streams
could take every slot and lock out the API and the probes alike. Here each class has its own
limit: the API's calls; health checks (Check, List); and the streams of health and reflection
(Watch, ServerReflectionInfo), which may be given a maximum age of their own (a Watch then
ends cleanly with OK; its client watches again); otherwise their connection's age ends them.
Health and reflection need no key, so each of their classes is also capped per peer address.
A call's slot is taken before its request is read, so the limits bound the bodies being
received too; a call over a limit is refused RESOURCE_EXHAUSTED, with
google.rpc.RetryInfo, without its request being read.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from timeseries_aggregation.domain.quotas import Holdings
from timeseries_aggregation.errors import LimitReachedError
from timeseries_aggregation.observability.refusals import Reason, Refusals
from timeseries_aggregation.transport.handlers import (
    Behaviour,
    Handler,
    declared_handler,
    request_as_stream,
    rewrap_handler,
)
from timeseries_aggregation.transport.status import Context, abort_for

# What a caller refused for a full class is told to wait: slots free as calls end, which the
# server cannot foresee, so a short pause and a retry with backoff.
RETRY_AFTER_SECONDS = 1.0
_PROBE_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)


class CallClass(enum.Enum):
    API = "API calls"
    PROBE = "health checks"
    PROBE_STREAM = "health and reflection streams"


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """How many calls of each class may run at once, and how long a probe stream may last."""

    api_calls: int = 256
    probe_calls: int = 32
    probe_streams: int = 64
    probe_calls_per_peer: int = 8
    # 0: none of their own, as by default: gRPC clients that health-check their connections
    # treat a Watch that ends, even with OK, as a failure until it is watched again, while the
    # GOAWAY at a connection's maximum age moves their Watch to a new connection cleanly.
    probe_stream_max_age_seconds: float = 0.0


_REASONS = {
    CallClass.API: Reason.API_CALLS,
    CallClass.PROBE: Reason.PROBE_CALLS,
    CallClass.PROBE_STREAM: Reason.PROBE_STREAMS,
}
_PER_PEER_REASONS = {
    CallClass.PROBE: Reason.PROBE_CALLS_PER_PEER,
    CallClass.PROBE_STREAM: Reason.PROBE_STREAMS_PER_PEER,
}


def call_class(method: str, handler: Handler) -> CallClass:
    service = method.lstrip("/").rpartition("/")[0]
    if service not in _PROBE_SERVICES:
        return CallClass.API
    streaming = handler.request_streaming or handler.response_streaming
    return CallClass.PROBE_STREAM if streaming else CallClass.PROBE


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.1:5000' or 'ipv6:[::1]:5000' to the address without the port: one machine's
    connections count together, however many it opens."""
    address = peer.partition(":")[2] or peer
    host = address.rpartition(":")[0] if address.count(":") == 1 or address.startswith("[") else address
    return host or peer


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Admits each call within its class's limit; install it before authentication."""

    def __init__(self, limits: AdmissionLimits, refusals: Refusals) -> None:
        self._limits = limits
        self._refusals = refusals
        self._maximum = {
            CallClass.API: limits.api_calls,
            CallClass.PROBE: limits.probe_calls,
            CallClass.PROBE_STREAM: limits.probe_streams,
        }
        self._running: Counter[CallClass] = Counter()
        self._per_peer = Holdings()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kind = call_class(method, declared_handler(handler))
        # The handler reads the request itself, after the call has its slot: a class's limit
        # bounds the bodies being received at once too, and a refused call's is never read.
        handler = request_as_stream(handler)
        own_age = self._limits.probe_stream_max_age_seconds
        max_age = own_age if kind is CallClass.PROBE_STREAM and own_age > 0 else None

        def unary_response(behaviour: Behaviour) -> Behaviour:
            async def admitted(request: Any, context: Context) -> Any:
                async with self._admission(kind, method, context):
                    response = behaviour(request, context)
                    return await response if inspect.isawaitable(response) else response

            return admitted

        def streaming_response(behaviour: Behaviour) -> Behaviour:
            async def admitted(request: Any, context: Context) -> AsyncIterator[Any]:
                async with self._admission(kind, method, context):
                    responses = aiter(behaviour(request, context))
                    deadline = None if max_age is None else asyncio.get_running_loop().time() + max_age
                    while True:
                        try:
                            async with asyncio.timeout_at(deadline):
                                response = await anext(responses)
                        except StopAsyncIteration:
                            return
                        except TimeoutError:
                            # Old enough: end with OK; a watcher watches again, on a connection
                            # the server may meanwhile have asked it to replace.
                            await responses.aclose()
                            return
                        yield response

            return admitted

        return rewrap_handler(handler, unary_response, streaming_response)

    def _full(self, kind: CallClass, method: str) -> LimitReachedError:
        self._refusals.record(_REASONS[kind], method)
        maximum = self._maximum[kind]
        return LimitReachedError(
            _REASONS[kind].value,
            "server",
            f"the server runs at most {maximum} {kind.value} at once, and that many are running",
            RETRY_AFTER_SECONDS,
        )

    @asynccontextmanager
    async def _admission(self, kind: CallClass, method: str, context: Context) -> AsyncIterator[None]:
        """Hold the call's slot of its class (and a probe's slot of its peer) while it runs."""
        if self._running[kind] >= self._maximum[kind]:
            await abort_for(context, self._full(kind, method), method)
        # Probes need no key, so nothing but its address tells one caller from another.
        peer = f"{kind.name} {peer_host(context.peer() or '')}" if kind in _PER_PEER_REASONS else None
        per_peer = self._limits.probe_calls_per_peer
        if peer is not None and not self._per_peer.try_take(peer, per_peer):
            reason = _PER_PEER_REASONS[kind]
            self._refusals.record(reason, method)
            error = LimitReachedError(
                reason.value,
                "peer",
                f"one peer address may have at most {per_peer} {kind.value} at once, and this one does",
                RETRY_AFTER_SECONDS,
            )
            await abort_for(context, error, method)
        self._running[kind] += 1
        try:
            yield
        finally:
            self._running[kind] -= 1
            if peer is not None:
                self._per_peer.give_back(peer)
