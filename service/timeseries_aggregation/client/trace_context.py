"""The caller's OpenTelemetry trace context, sent with each call so the service's spans join
the caller's trace (W3C `traceparent` and `tracestate` metadata).

OpenTelemetry is optional for callers: without the `opentelemetry-api` package, or without a
current span, calls carry no trace headers.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

# Set by tools that start a process inside a trace (CI systems, otel-cli): the CLI's calls
# continue that trace when the process has no span of its own.
TRACEPARENT_VARIABLE = "TRACEPARENT"
TRACESTATE_VARIABLE = "TRACESTATE"


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """Call metadata for the current trace context; empty without one."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


@contextmanager
def environment_trace_context() -> Iterator[None]:
    """Within the block, the trace context of $TRACEPARENT (and $TRACESTATE) is current, when
    set and well formed and OpenTelemetry is installed."""
    traceparent = os.environ.get(TRACEPARENT_VARIABLE)
    if not traceparent:
        yield
        return
    try:
        from opentelemetry import context, propagate
    except ImportError:
        yield
        return
    carrier = {"traceparent": traceparent}
    if tracestate := os.environ.get(TRACESTATE_VARIABLE):
        carrier["tracestate"] = tracestate
    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)
