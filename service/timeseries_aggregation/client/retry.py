"""When and how often a call is tried again."""

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

# The service answers UNAVAILABLE when the database is away or the server is stopping, and
# RESOURCE_EXHAUSTED when its stream limit is reached: both pass. Every call of ours is safe
# to repeat: queries read, history reads, and ingest replaces readings by key.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


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


def should_retry(error: grpc.RpcError) -> bool:
    code = error.code() if callable(getattr(error, "code", None)) else None
    return code in RETRYABLE
