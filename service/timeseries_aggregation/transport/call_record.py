"""One record per call: what authentication decided and what the handler counted.

The observability interceptor opens the record before a handler runs and reads it when the
call ends; authentication and the servicer write into it. It travels in a ContextVar because
gRPC runs each call's handler, and the interceptors around it, in one task of its own.
"""

from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field

from timeseries_aggregation.domain.api_keys import Scope
from timeseries_aggregation.domain.quotas import KeyLimits


@dataclass(slots=True)
class CallRecord:
    """What is learned about a call while it runs."""

    # The API key's name; empty while unknown or with authentication off.
    caller: str = ""
    # The API key's scopes; None with authentication off, where the one caller may do anything.
    scopes: frozenset[Scope] | None = None
    # The key's limits in force (transport.quotas); None with authentication off.
    limits: KeyLimits | None = None
    # Ingest: messages and readings read so far, and how many messages carried how many readings.
    messages: int = 0
    readings: int = 0
    message_sizes: Counter[int] = field(default_factory=Counter)
    # Ingest: rows inserted or updated by the stream's committed transaction.
    rows_written: int = 0
    # Ingest: the stream was committed although the client had gone before it heard so.
    committed_after_client_left: bool = False
    # What the handler learned that the call's trace span should carry (granularity, series
    # and bucket counts), under OpenTelemetry attribute names.
    trace_attributes: dict[str, str | int] = field(default_factory=dict)

    def count_message(self, readings: int) -> None:
        self.messages += 1
        self.readings += readings
        self.message_sizes[readings] += 1


_current: ContextVar[CallRecord | None] = ContextVar("timeseries_aggregation_call", default=None)


def open_call_record() -> CallRecord:
    """Start the record of the call running in this task."""
    record = CallRecord()
    _current.set(record)
    return record


def current_call() -> CallRecord:
    """The record of the call running in this task (opened here if no interceptor did)."""
    record = _current.get()
    return record if record is not None else open_call_record()
