"""When and how often a call is tried again."""

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

# The service answers UNAVAILABLE when the database is away or the server is stopping, and
# RESOURCE_EXHAUSTED when its stream limit is reached: both pass. Every call of ours is safe
# to repeat: queries, history and series listings read, ingest replaces readings by key, an
# update of a series sets the same fields to the same values again, and a deletion is
# idempotent: deleting a range again leaves the state the first deletion left (only the count
# differs, when an attempt committed but its answer was lost).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# An ingest stream that met a deadlock or a serialization failure is ABORTED and rolled back
# whole: sending it again is the retry the status asks for.
INGEST_RETRYABLE = RETRYABLE | {grpc.StatusCode.ABORTED}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter between attempts."""

    max_attempts: int = 4
    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        """The pause before each retry: max_attempts - 1 of them."""
        ceiling = self.initial_backoff_seconds
        for _ in range(self.max_attempts - 1):
            yield random.uniform(0, ceiling)
            ceiling = min(ceiling * self.multiplier, self.max_backoff_seconds)


def should_retry(error: grpc.RpcError, retryable: frozenset[grpc.StatusCode] = RETRYABLE) -> bool:
    """Whether the status of a failed call is one of the retryable codes."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    return code in retryable
