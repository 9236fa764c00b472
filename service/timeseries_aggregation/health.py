"""The standard gRPC health service, kept in step with the database's reachability."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from timeseries_aggregation.errors import DatabaseUnavailableError
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.wording import counted, quoted

logger = logging.getLogger(__name__)

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
# With the default 1 s interval, a database that stops answering (even without refusing
# connections) shows as NOT_SERVING within about 3 s, and the calls waiting on it end.
PING_TIMEOUT_SECONDS = 2.0


class HealthService:
    """grpc.health.v1.Health (Check, List, Watch), whose Watch streams end, after NOT_SERVING,
    once shutdown begins.

    grpc_health's servicer keeps every Watch open until the server cancels it, so a drain
    (server.stop(grace)) waits out its whole grace period whenever a load balancer watches.
    """

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def set(self, service: str, status: int) -> None:
        """Publish a service's status; ignored once shutdown has begun."""
        async with self._changed:
            if not self._shutting_down:
                self._statuses[service] = status
                self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service from now on, and end the watches."""
        async with self._changed:
            self._shutting_down = True
            self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
            self._changed.notify_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"service: unknown service {quoted(request.service)}"
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._statuses.items()
            }
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        sent: int | None = None
        while True:
            async with self._changed:
                await self._changed.wait_for(partial(self._has_news, request.service, sent))
                status, shutting_down = self._status(request.service), self._shutting_down
            if status != sent:
                yield health_pb2.HealthCheckResponse(status=status)
                sent = status
            if shutting_down:
                return

    def _has_news(self, service: str, sent: int | None) -> bool:
        """Whether a watcher that last sent `sent` has something to do."""
        return self._shutting_down or self._status(service) != sent

    def _status(self, service: str) -> int:
        return self._statuses.get(service, SERVICE_UNKNOWN)


class Readiness:
    """SERVING for the named services while no fault stands, NOT_SERVING while any does (the
    database unreachable, the key file not reloaded), so each fault clears on its own."""

    def __init__(self, health: HealthService, service_names: Iterable[str]) -> None:
        self._health = health
        self._names = list(service_names)
        self._faults: set[str] = set()
        self._published: int | None = None
        # Reports come from the database monitor and from SIGHUP: one publishes at a time.
        self._publishing = asyncio.Lock()

    async def report(self, fault: str, present: bool) -> None:
        """Say whether the fault (worded for the log) stands; publish the status if it changed."""
        async with self._publishing:
            if present:
                self._faults.add(fault)
            else:
                self._faults.discard(fault)
            status = NOT_SERVING if self._faults else SERVING
            if status == self._published:
                return
            if self._published is not None:
                logger.warning(
                    "health: %s",
                    "SERVING" if status == SERVING else f"NOT_SERVING ({', '.join(sorted(self._faults))})",
                )
            for name in self._names:
                await self._health.set(name, status)
            self._published = status


DATABASE_UNREACHABLE = "database unreachable"
SCHEMA_NEWER = "the database's schema is newer than this build"


class DatabaseHealth:
    """Reports the database unreachable while it does not answer a ping.

    Each failed ping also ends the calls waiting on the database with UNAVAILABLE, so a
    database that freezes costs a call a few seconds, not its statement timeout.
    """

    def __init__(self, database: Database, readiness: Readiness) -> None:
        self._database = database
        self._readiness = readiness

    async def update(self) -> None:
        """Ping once and report the result."""
        try:
            await self._database.ping(PING_TIMEOUT_SECONDS)
            reachable = True
        except DatabaseUnavailableError:
            reachable = False
            abandoned = self._database.abandon_calls()
            if abandoned:
                logger.warning("database not answering: ended %s waiting on it", counted(abandoned, "call"))
        await self._readiness.report(DATABASE_UNREACHABLE, not reachable)
        # Writes are refused until this server is upgraded: a load balancer should send them to
        # a replica that can take them.
        await self._readiness.report(SCHEMA_NEWER, self._database.schema_moved_past)

    async def watch(self, interval_seconds: float) -> None:
        """Update every interval; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            await self.update()
