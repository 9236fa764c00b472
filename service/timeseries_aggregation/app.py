"""serve(): owns the database, the gRPC server and their orderly shutdown."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.config import Config
from timeseries_aggregation.health import DatabaseHealth
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.embedded import embedded_database
from timeseries_aggregation.transport.servicer import TimeseriesAggregationServicer

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TimeseriesAggregationService"].full_name


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server and the port it is bound to (useful when asked for port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer


@asynccontextmanager
async def grpc_server(database: Database, config: Config) -> AsyncIterator[RunningServer]:
    """Serve the API, health and reflection; on exit report NOT_SERVING, drain, and stop."""
    limit = config.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    pb_grpc.add_TimeseriesAggregationServiceServicer_to_server(
        TimeseriesAggregationServicer(database), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    database_health = DatabaseHealth(database, health_servicer, ["", SERVICE_NAME])
    # Known before the first call arrives, so a probe never sees an unknown status.
    await database_health.update()
    port = server.add_insecure_port(config.listen_address)
    await server.start()
    monitor = asyncio.create_task(database_health.watch(config.health_check_interval_seconds))
    try:
        yield RunningServer(server, port, health_servicer)
    finally:
        await health_servicer.enter_graceful_shutdown()
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        await server.stop(config.shutdown_grace_seconds)


@asynccontextmanager
async def database_url(config: Config) -> AsyncIterator[str]:
    """The configured database, or an embedded one when none is configured."""
    if config.database_url:
        logger.info("using the database from the configured URL")
        yield config.database_url
    else:
        async with embedded_database(config.data_dir) as url:
            yield url


async def serve(config: Config) -> None:
    """Run until SIGINT or SIGTERM, then shut down in reverse order of start-up."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with (
        database_url(config) as url,
        open_database(url, config.pool) as database,
        grpc_server(database, config) as running,
    ):
        logger.info("serving %s on %s (port %d)", SERVICE_NAME, config.listen_address, running.port)
        await stop.wait()
        logger.info("shutting down: draining calls for up to %g s", config.shutdown_grace_seconds)
