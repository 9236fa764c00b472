"""serve(): owns the database, the gRPC server and their orderly shutdown."""

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from timeseries_aggregation.config import AUTH_API_KEY, ENV_PREFIX, Config, split_host_port
from timeseries_aggregation.domain.api_keys import KeyFileError
from timeseries_aggregation.domain.quotas import KeyLimits
from timeseries_aggregation.errors import StartupError
from timeseries_aggregation.health import DatabaseHealth, HealthService, Readiness
from timeseries_aggregation.observability.interceptor import ObservabilityInterceptor, TracingInterceptor
from timeseries_aggregation.observability.metrics import ServiceMetrics, metrics_http_server
from timeseries_aggregation.observability.refusals import Refusals
from timeseries_aggregation.observability.tracing import tracing
from timeseries_aggregation.storage.compression import readings_compression
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.embedded import embedded_database
from timeseries_aggregation.storage.history_retention import history_retention
from timeseries_aggregation.storage.readings_retention import readings_retention
from timeseries_aggregation.transport.admission import AdmissionInterceptor, AdmissionLimits
from timeseries_aggregation.transport.auth import Authenticator, AuthInterceptor
from timeseries_aggregation.transport.quotas import KeyQuotas, default_key_limits
from timeseries_aggregation.transport.reflection import enable_reflection
from timeseries_aggregation.transport.registration import SERVICE_NAME, add_service
from timeseries_aggregation.transport.servicer import TimeseriesAggregationServicer
from timeseries_aggregation.transport.tls import CertificateError, CertificateFiles, ServerCertificates
from timeseries_aggregation.workers import WorkerRole, report_ready, worker_processes, worker_role

logger = logging.getLogger(__name__)

# How often a worker checks that its supervisor is still there.
ORPHAN_CHECK_SECONDS = 1.0
# What health reports while the key file did not reload (see Authenticator.reload).
KEY_FILE_NOT_RELOADED = "API key file not reloaded"


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server and the ports it is bound to (useful when asked for port 0)."""

    server: grpc.aio.Server
    port: int
    health: HealthService
    # None when authentication is off.
    authenticator: Authenticator | None
    metrics: ServiceMetrics
    readiness: Readiness
    # None when the server speaks plaintext.
    certificates: ServerCertificates | None
    # The port of the /metrics endpoint; None when METRICS_ADDRESS is not set.
    metrics_port: int | None = None

    async def reload(self) -> None:
        """What SIGHUP does: re-read the TLS certificate and the key file. A key file that does
        not load leaves no key in force and health NOT_SERVING until one does."""
        if self.certificates is not None:
            self.certificates.reload()
        if self.authenticator is not None:
            await self.readiness.report(KEY_FILE_NOT_RELOADED, not self.authenticator.reload())


def _server_options(config: Config, share_port: bool) -> list[tuple[str, int]]:
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
        # A connection without calls is closed after a while; every connection is asked to go
        # away at its maximum age (clients reconnect, and spread over the servers anew), and
        # closed once its calls have had as long as an ingest stream may last: so a health
        # Watch or reflection stream lasts at most the connection's age and that grace.
        ("grpc.max_connection_idle_ms", int(config.connection_idle_seconds * 1000)),
        ("grpc.max_connection_age_ms", int(config.connection_max_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            int(config.stream_max_age_seconds * 1000),
        ),
        # gRPC lets sockets share a port by default: a second server started on the same port
        # would take half of the calls instead of failing. Only the workers of one supervisor
        # share theirs (see workers.py).
        ("grpc.so_reuseport", int(share_port)),
    ]


def admission_limits(config: Config) -> AdmissionLimits:
    return AdmissionLimits(
        api_calls=config.max_concurrent_rpcs,
        probe_calls=config.probe_max_concurrent_rpcs,
        probe_streams=config.probe_max_streams,
        probe_calls_per_peer=config.probe_max_calls_per_peer,
        probe_stream_max_age_seconds=config.probe_stream_max_age_seconds,
    )


def key_limits(config: Config) -> KeyLimits:
    """Every key's limits where its key-file line sets none."""
    return default_key_limits(
        config.pool.write_max_size,
        config.key_max_streams,
        config.key_max_writes,
        config.key_rate,
        config.key_burst,
    )


def _listen_error(address: str, reason: str) -> StartupError:
    return StartupError(f"cannot listen on {ENV_PREFIX}LISTEN_ADDRESS={address}: {reason}")


def _check_can_listen(address: str) -> None:
    """Fail, before anything starts, when the port is taken or the host is not this machine's.

    gRPC would fail too, but only once the database is up, and without saying why.
    """
    host, port = split_host_port(address)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise _listen_error(address, error.strerror or str(error)) from None
    not_local = 0
    for family, kind, protocol, _, socket_address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                # As gRPC binds: a port whose last connections are still closing is free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(socket_address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise _listen_error(
                    address, "the port is in use by another process; stop it or choose another port"
                ) from None
            # Other failures (no IPv6 here, say) are gRPC's to judge: it binds what it can.
            if error.errno == errno.EADDRNOTAVAIL:
                not_local += 1
    if not_local == len(addresses):
        raise _listen_error(address, "no network interface of this machine has that address")


def certificates_for(config: Config) -> ServerCertificates | None:
    """The configured TLS certificate (None for plaintext); raises StartupError naming the file."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    try:
        return ServerCertificates(
            CertificateFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
        )
    except CertificateError as error:
        raise StartupError(f"{ENV_PREFIX}TLS_CERT_FILE, _KEY_FILE, _CLIENT_CA_FILE: {error}") from None


def _bind(server: grpc.aio.Server, config: Config, certificates: ServerCertificates | None) -> int:
    """Listen with TLS when a certificate is configured (mutual TLS with a client CA)."""
    if certificates is None:
        return server.add_insecure_port(config.listen_address)
    return server.add_secure_port(config.listen_address, certificates.credentials())


def authenticator_for(config: Config) -> Authenticator | None:
    """The configured keys (None with authentication off); raises StartupError naming the file."""
    if config.auth_mode != AUTH_API_KEY:
        return None
    assert config.api_keys_file is not None  # load_config() requires it
    try:
        return Authenticator(config.api_keys_file)
    except (OSError, KeyFileError, UnicodeDecodeError) as error:
        raise StartupError(f"{ENV_PREFIX}API_KEYS_FILE: {error}") from None


@asynccontextmanager
async def grpc_server(
    database: Database,
    config: Config,
    authenticator: Authenticator | None = None,
    share_port: bool = False,
    certificates: ServerCertificates | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve the API, health, reflection and metrics; on exit report NOT_SERVING, drain, and stop.

    authenticator: the keys in force, read from the configured file when not given.
    certificates: the TLS certificate in force, read from the configured files when not given.
    share_port: listen with SO_REUSEPORT, as the workers of `serve --workers N` do.
    """
    metrics = ServiceMetrics()
    metrics.watch_pools(database.pools, database.waiting)
    await metrics.read_schema_migration(database)
    refusals = Refusals(metrics)
    admission = admission_limits(config)
    # Observed first (it sees every refusal), admitted by class before authentication, then
    # authenticated and paced per key before a byte of the request is read.
    interceptors: list[grpc.aio.ServerInterceptor] = [
        ObservabilityInterceptor(metrics),
        AdmissionInterceptor(admission, refusals),
    ]
    authenticator = authenticator or authenticator_for(config)
    quotas = None
    if authenticator is not None:
        quotas = KeyQuotas(key_limits(config), config.pool.write_max_size, refusals)
        interceptors.append(AuthInterceptor(authenticator, refusals, quotas))
    # Last: only the calls authentication let through are traced.
    interceptors.append(TracingInterceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=_server_options(config, share_port),
        # Only a backstop against floods: the admission interceptor's limits per class come
        # first, and refused calls end at once, so this is reached only by calls arriving faster
        # than they can be refused.
        maximum_concurrent_rpcs=2 * (admission.api_calls + admission.probe_calls + admission.probe_streams),
    )
    servicer = TimeseriesAggregationServicer(
        database, config.stream_idle_timeout_seconds, config.stream_max_age_seconds, quotas
    )
    add_service(server, servicer)
    health_servicer = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        enable_reflection(server, [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    readiness = Readiness(health_servicer, ["", SERVICE_NAME])
    database_health = DatabaseHealth(database, readiness)
    # Known before the first call arrives, so a probe never sees an unknown status.
    await database_health.update()
    certificates = certificates or certificates_for(config)
    try:
        port = _bind(server, config, certificates)
    except RuntimeError:
        # gRPC's message says only that binding failed (its own log line says why).
        raise _listen_error(
            config.listen_address, "gRPC cannot bind it (is the host an address of this machine?)"
        ) from None
    async with AsyncExitStack() as resources:
        if config.tracing:
            # Entered first, left last: the spans of the drained calls are flushed too.
            await resources.enter_async_context(tracing(os.environ))
        metrics_port = None
        if config.metrics_address:
            metrics_port = await resources.enter_async_context(
                metrics_http_server(metrics.registry, config.metrics_address)
            )
        await server.start()
        monitor = asyncio.create_task(database_health.watch(config.health_check_interval_seconds))
        try:
            yield RunningServer(
                server, port, health_servicer, authenticator, metrics, readiness, certificates, metrics_port
            )
        finally:
            # Watches get NOT_SERVING and end, so the drain waits only for the service's calls.
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


def _stop_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


@asynccontextmanager
async def _reload_on_sighup(running: RunningServer) -> AsyncIterator[None]:
    """Reload on SIGHUP while the block runs; signals that arrive during a reload make one more.

    Installed whatever is configured: SIGHUP's default action would end the process.
    """
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()

    async def reload_when_asked() -> None:
        while True:
            await requested.wait()
            requested.clear()
            await running.reload()

    reloads = asyncio.create_task(reload_when_asked())
    loop.add_signal_handler(signal.SIGHUP, requested.set)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        reloads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloads


def _log_serving(config: Config, port: int, metrics_port: int | None) -> None:
    logger.info(
        "serving %s on %s (port %d, %s, authentication %s)",
        SERVICE_NAME,
        config.listen_address,
        port,
        "TLS" if config.tls_cert_file else "plaintext",
        config.auth_mode,
    )
    if metrics_port is not None:
        logger.info("metrics on http://%s/metrics (port %d)", config.metrics_address, metrics_port)


async def serve(config: Config) -> None:
    """Run until SIGINT or SIGTERM, then shut down in reverse order of start-up."""
    role = worker_role()
    if role is not None:
        await _serve_as_worker(config, role)
        return
    await asyncio.to_thread(_check_can_listen, config.listen_address)
    # Checked before the database starts, like the address: a start that cannot succeed fails fast.
    authenticator = authenticator_for(config)
    certificates = certificates_for(config)
    loop = asyncio.get_running_loop()
    stop = _stop_on_signals(loop)
    async with (
        database_url(config) as url,
        open_database(url, config.pool) as database,
        history_retention(database, config.history_retention),
        readings_compression(database, config.compress_after),
        readings_retention(database, config.readings_retention),
    ):
        await database.require_this_contract()
        if config.workers > 1:
            await _supervise(config, url, stop)
            return
        async with (
            grpc_server(database, config, authenticator, certificates=certificates) as running,
            _reload_on_sighup(running),
        ):
            _log_serving(config, running.port, running.metrics_port)
            await stop.wait()
            logger.info("shutting down: draining calls for up to %g s", config.shutdown_grace_seconds)


async def _supervise(config: Config, url: str, stop: asyncio.Event) -> None:
    """Run config.workers servers until stopped, or until one of them exits on its own."""
    loop = asyncio.get_running_loop()
    async with worker_processes(config, url) as workers:
        loop.add_signal_handler(signal.SIGHUP, workers.send, signal.SIGHUP)
        logger.info(
            "serving %s on %s with %d worker processes sharing the port",
            SERVICE_NAME,
            workers.listen_address,
            config.workers,
        )
        stopped = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(workers.first_exit())
        await asyncio.wait({stopped, exited}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not stop.is_set():
            index, code = exited.result()
            raise StartupError(f"worker {index} exited (exit code {code}); stopping the others")
        exited.cancel()
        logger.info(
            "shutting down: every worker drains its calls for up to %g s", config.shutdown_grace_seconds
        )


async def _serve_as_worker(config: Config, role: WorkerRole) -> None:
    """One of the supervisor's servers: its own pools, the shared port, no background jobs."""
    loop = asyncio.get_running_loop()
    stop = _stop_on_signals(loop)
    supervisor = os.getppid()
    assert config.database_url is not None  # the supervisor passes it
    async with (
        open_database(config.database_url, config.pool) as database,
        grpc_server(database, config, share_port=True) as running,
        _reload_on_sighup(running),
    ):
        _log_serving(config, running.port, running.metrics_port)
        report_ready(role)
        # A supervisor killed outright cannot stop its workers: they notice they were orphaned.
        while not stop.is_set() and os.getppid() == supervisor:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ORPHAN_CHECK_SECONDS)
        logger.info("shutting down: draining calls for up to %g s", config.shutdown_grace_seconds)
