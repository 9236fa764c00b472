"""Every refused call counted in the metrics, and logged at a bounded rate.

A flood of refusals (hundreds of idle streams, a loader over its rate) must not become a flood
of log lines: each reason logs at most one line per interval, which says how many refusals of
that reason it stood for. Lines and labels name the reason and the method, never a key, a
key's name or a peer.
"""

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable

from timeseries_aggregation.observability.metrics import ServiceMetrics
from timeseries_aggregation.wording import counted

logger = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 10.0


class Reason(enum.Enum):
    """Why a call was refused; the metric's `reason` label."""

    API_CALLS = "api_calls"
    PROBE_CALLS = "probe_calls"
    PROBE_CALLS_PER_PEER = "probe_calls_per_peer"
    PROBE_STREAMS = "probe_streams"
    PROBE_STREAMS_PER_PEER = "probe_streams_per_peer"
    UNAUTHENTICATED = "unauthenticated"
    # The key file did not reload, so no key can be checked (UNAVAILABLE).
    KEYS_UNAVAILABLE = "keys_unavailable"
    PERMISSION_DENIED = "permission_denied"
    KEY_RATE = "key_rate"
    KEY_STREAMS = "key_streams"
    KEY_WRITES = "key_writes"


class Refusals:
    """Counts refusals by reason and method; logs each reason at most once per interval."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        interval_seconds: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counter = metrics.refused_calls
        self._interval = interval_seconds
        self._clock = clock
        self._last_logged: dict[Reason, float] = {}
        self._unlogged: Counter[Reason] = Counter()

    def record(self, reason: Reason, method: str) -> None:
        """Count one refusal of a call of `method` ('/package.Service/Method')."""
        service, _, name = method.lstrip("/").rpartition("/")
        self._counter.labels(reason=reason.value, grpc_service=service, grpc_method=name).inc()
        now = self._clock()
        last = self._last_logged.get(reason)
        if last is not None and now - last < self._interval:
            self._unlogged[reason] += 1
            return
        self._last_logged[reason] = now
        count = self._unlogged.pop(reason, 0) + 1
        logger.warning(
            "refused a %s call (%s): %s for this reason since the last such line",
            name,
            reason.value,
            counted(count, "refusal"),
            extra={"reason": reason.value, "refused_method": method, "refusals": count},
        )
