"""serve(): owns the database, the gRPC server and their orderly shutdown."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from timeseries_aggregation.config import AUTH_API_KEY, Config
from timeseries_aggregation.health import DatabaseHealth
from timeseries_aggregation.observability.interceptor import (
    CallerRecordingAuthenticator,
    CallRecords,
    ObservabilityInterceptor,
)
from timeseries_aggregation.observability.metrics import ServiceMetrics, metrics_http_server
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.embedded import embedded_database
from timeseries_aggregation.storage.history_retention import history_retention
from timeseries_aggregation.transport.auth import Authenticator
from timeseries_aggregation.transport.registration import SERVICE_NAME, add_service
from timeseries_aggregation.transport.servicer import StreamLimits, TimeseriesAggregationServicer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server and the ports it is bound to (useful when asked for port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    authenticator: Authenticator
    metrics: ServiceMetrics
    # The port of the /metrics endpoint; None when METRICS_ADDRESS is not set.
    metrics_port: int | None = None


def _server_options(config: Config) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Ping idle connections and drop peers that stop answering: a vanished client's
        # stream ends (and rolls back) instead of holding a database connection.
        ("grpc.keepalive_time_ms", int(config.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_seconds * 1000)),
        ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # A client stream gets no data from the server until it ends; without this, the
        # server would stop pinging after two pings and never notice the client is gone.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 3),
    ]


def _bind(server: grpc.aio.Server, config: Config) -> int:
    """Listen with TLS when a certificate is configured (mutual TLS with a client CA)."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return server.add_insecure_port(config.listen_address)
    client_ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials(
        [(config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(config.listen_address, credentials)


@asynccontextmanager
async def grpc_server(database: Database, config: Config) -> AsyncIterator[RunningServer]:
    """Serve the API, health, reflection and metrics; on exit report NOT_SERVING, drain, and stop."""
    metrics = ServiceMetrics()
    metrics.watch_pools(database.pools, database.waiting)
    await metrics.read_schema_migration(database)
    calls = CallRecords()
    server = grpc.aio.server(
        interceptors=[ObservabilityInterceptor(metrics, calls)],
        options=_server_options(config),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    authenticator = CallerRecordingAuthenticator(
        config.api_keys_file if config.auth_mode == AUTH_API_KEY else None, calls
    )
    limits = StreamLimits(config.max_concurrent_streams, config.stream_idle_timeout_seconds)
    servicer = TimeseriesAggregationServicer(database, authenticator, limits, metrics.rows_written.inc)
    add_service(server, servicer)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    database_health = DatabaseHealth(database, health_servicer, ["", SERVICE_NAME])
    # Known before the first call arrives, so a probe never sees an unknown status.
    await database_health.update()
    port = _bind(server, config)
    async with AsyncExitStack() as resources:
        metrics_port = None
        if config.metrics_address:
            metrics_port = await resources.enter_async_context(
                metrics_http_server(metrics.registry, config.metrics_address)
            )
        await server.start()
        monitor = asyncio.create_task(database_health.watch(config.health_check_interval_seconds))
        try:
            yield RunningServer(server, port, health_servicer, authenticator, metrics, metrics_port)
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
        history_retention(database, config.history_retention),
        grpc_server(database, config) as running,
    ):
        loop.add_signal_handler(signal.SIGHUP, running.authenticator.reload)
        logger.info(
            "serving %s on %s (port %d, %s, authentication %s)",
            SERVICE_NAME,
            config.listen_address,
            running.port,
            "TLS" if config.tls_cert_file else "plaintext",
            config.auth_mode,
        )
        if running.metrics_port is not None:
            logger.info(
                "metrics on http://%s/metrics (port %d)", config.metrics_address, running.metrics_port
            )
        await stop.wait()
        logger.info("shutting down: draining calls for up to %g s", config.shutdown_grace_seconds)
