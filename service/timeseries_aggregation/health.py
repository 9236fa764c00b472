"""Keeps the standard gRPC health status in step with the database's reachability."""

import asyncio
import logging
from collections.abc import Iterable

from grpc_health.v1 import health, health_pb2

from timeseries_aggregation.errors import DatabaseUnavailableError
from timeseries_aggregation.storage.database import Database

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# With the default 1 s interval, a database that stops answering (even without refusing
# connections) shows as NOT_SERVING within about 3 s, and the calls waiting on it end.
PING_TIMEOUT_SECONDS = 2.0


class DatabaseHealth:
    """Reports SERVING while the database answers a ping and NOT_SERVING while it does not.

    Each failed ping also ends the calls waiting on the database with UNAVAILABLE, so a
    database that freezes costs a call a few seconds, not its statement timeout.
    """

    def __init__(
        self, database: Database, health_servicer: health.aio.HealthServicer, service_names: Iterable[str]
    ) -> None:
        self._database = database
        self._health = health_servicer
        self._names = list(service_names)
        self._current: int | None = None

    async def update(self) -> None:
        """Ping once and publish the result if it changed."""
        try:
            await self._database.ping(PING_TIMEOUT_SECONDS)
            status = SERVING
        except DatabaseUnavailableError:
            status = NOT_SERVING
            abandoned = self._database.abandon_calls()
            if abandoned:
                logger.warning("database not answering: ended %d calls waiting on it", abandoned)
        if status == self._current:
            return
        if self._current is not None:
            logger.warning(
                "health: %s", "SERVING" if status == SERVING else "NOT_SERVING (database unreachable)"
            )
        for name in self._names:
            await self._health.set(name, status)
        self._current = status

    async def watch(self, interval_seconds: float) -> None:
        """Update every interval; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            await self.update()
