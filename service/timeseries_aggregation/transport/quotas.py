"""Each API key's fair share: calls paced by a token bucket, ingest streams and the write
connections they hold counted per key.

A key's limits come from its key-file line, or from the server's defaults. The default write
share is half the write pool, and no key may take more than the pool less one connection: a
single key, however greedy, always leaves room for another key's streams to write.
"""

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from timeseries_aggregation.domain.api_keys import ApiKey
from timeseries_aggregation.domain.quotas import (
    BURST,
    RATE,
    STREAMS,
    WRITES,
    Holdings,
    KeyLimits,
    TokenBucket,
)
from timeseries_aggregation.errors import LimitReachedError
from timeseries_aggregation.observability.refusals import Reason, Refusals
from timeseries_aggregation.wording import counted

# A share held while the block runs (a stream, a write connection).
HeldShare = AbstractAsyncContextManager[None]

# A key at its stream or write share is told to wait this long: its own streams end when it
# ends them, which the server cannot foresee.
HOLDING_RETRY_AFTER_SECONDS = 1.0


def default_key_limits(
    write_pool_size: int, streams: int | None, writes: int | None, rate: float, burst: int
) -> KeyLimits:
    """The server's defaults: as many streams as the write pool has connections, half of them
    writing (at least one), unless the environment says otherwise."""
    return KeyLimits(
        streams=streams if streams is not None else write_pool_size,
        writes=writes if writes is not None else max(1, write_pool_size // 2),
        rate=rate,
        burst=burst,
    )


class KeyQuotas:
    """What each key holds and how fast it calls, against its limits."""

    def __init__(
        self,
        defaults: KeyLimits,
        write_pool_size: int,
        refusals: Refusals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._defaults = defaults
        self._most_writes = max(1, write_pool_size - 1)
        self._refusals = refusals
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._streams = Holdings()
        self._writes = Holdings()

    def limits_of(self, api_key: ApiKey) -> KeyLimits:
        """The key's limits in force: its own, the defaults where it has none, and never more
        write connections than the pool less one."""
        limits = api_key.limits.or_defaults(self._defaults)
        assert limits.writes is not None
        if limits.writes > self._most_writes:
            limits = KeyLimits(limits.streams, self._most_writes, limits.rate, limits.burst)
        return limits

    def take_call(self, name: str, limits: KeyLimits, method: str) -> None:
        """Count a call against the key's rate; raises LimitReachedError when it has none left."""
        rate, burst = limits.rate or 0.0, limits.burst or 1
        if rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
            # New, or its limits were changed by a reload of the key file.
            bucket = self._buckets[name] = TokenBucket.full(rate, burst, now)
        wait = bucket.take(now)
        if wait > 0:
            self._refusals.record(Reason.KEY_RATE, method)
            raise LimitReachedError(
                Reason.KEY_RATE.value,
                name,
                f"the API key {name!r} may make {rate:g} calls a second, {burst} at once "
                f"({RATE}={rate:g} {BURST}={burst}), and has made them",
                wait,
            )

    def ingest_stream(self, name: str, limits: KeyLimits, method: str) -> HeldShare:
        """Hold one of the key's ingest streams; raises LimitReachedError when it holds them all."""
        assert limits.streams is not None
        return self._held(
            self._streams,
            name,
            limits.streams,
            Reason.KEY_STREAMS,
            method,
            f"the API key {name!r} may hold {counted(limits.streams, 'ingest stream')} at once "
            f"({STREAMS}={limits.streams}), and holds that many",
        )

    def write_connection(self, name: str, limits: KeyLimits, method: str) -> HeldShare:
        """Hold one of the key's write connections; raises LimitReachedError when it holds them all."""
        assert limits.writes is not None
        return self._held(
            self._writes,
            name,
            limits.writes,
            Reason.KEY_WRITES,
            method,
            f"the API key {name!r} may write with {counted(limits.writes, 'stream')} at once "
            f"({WRITES}={limits.writes}), and does; the stream was rolled back",
        )

    @asynccontextmanager
    async def _held(
        self, holdings: Holdings, name: str, limit: int, reason: Reason, method: str, refusal: str
    ) -> AsyncIterator[None]:
        if not holdings.try_take(name, limit):
            self._refusals.record(reason, method)
            raise LimitReachedError(reason.value, name, refusal, HOLDING_RETRY_AFTER_SECONDS)
        try:
            yield
        finally:
            holdings.give_back(name)
