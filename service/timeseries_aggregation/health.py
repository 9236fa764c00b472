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


async def watch_database(
    database: Database,
    health_servicer: health.aio.HealthServicer,
    service_names: Iterable[str],
    interval_seconds: float,
) -> None:
    """Ping the database every interval and report SERVING or NOT_SERVING; runs until cancelled."""
    names = list(service_names)
    current: int | None = None
    while True:
        try:
            await database.ping()
            status = SERVING
        except DatabaseUnavailableError:
            status = NOT_SERVING
        if status != current:
            if current is not None:
                logger.warning(
                    "health: %s",
                    "SERVING" if status == SERVING else "NOT_SERVING (database unreachable)",
                )
            for name in names:
                await health_servicer.set(name, status)
            current = status
        await asyncio.sleep(interval_seconds)
