"""`timeseries-aggregation health`: ask the server on this machine, configured by the same
environment as `serve`, whether it is SERVING; over TLS when the server speaks TLS. The
container's HEALTHCHECK runs it.

What verifies the server's certificate: TIMESERIES_AGGREGATION_HEALTH_CA_FILE, else the server's
certificate file itself: gRPC trusts a certificate given as a root whoever signed it, and the
probe means to reach this very server, so no CA needs to be named. The probe connects to
loopback, so the name checked in the certificate is TIMESERIES_AGGREGATION_HEALTH_SERVER_NAME
(default localhost). Under mutual TLS the probe presents
TIMESERIES_AGGREGATION_HEALTH_CLIENT_CERT_FILE and _KEY_FILE, which it then needs.
No API key is needed: the health service is open.
"""

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from timeseries_aggregation.cli.exit_codes import EXIT_CALL_FAILED, EXIT_OK, UsageError

_PREFIX = "TIMESERIES_AGGREGATION_"
DEFAULT_SERVER_NAME = "localhost"
# Hosts a server listens on every interface with; the probe reaches it on loopback.
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class Probe:
    """Where the health check connects and with which credentials (None: plaintext)."""

    target: str
    credentials: grpc.ChannelCredentials | None
    server_name: str


def probe_from_environment(environ: Mapping[str, str]) -> Probe:
    """The probe for the server that `serve` would start with this environment."""
    listen = environ.get(_PREFIX + "LISTEN_ADDRESS") or "localhost:50051"
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise UsageError(f"{_PREFIX}LISTEN_ADDRESS: the health check needs a fixed port, got {listen!r}")
    target = f"{'localhost' if host in _WILDCARDS else host}:{port}"
    certificate = _path(environ, "TLS_CERT_FILE")
    key = _path(environ, "TLS_KEY_FILE")
    server_name = environ.get(_PREFIX + "HEALTH_SERVER_NAME") or DEFAULT_SERVER_NAME
    if certificate is None or key is None:
        return Probe(target, None, server_name)
    roots = _path(environ, "HEALTH_CA_FILE") or certificate
    client_certificate = _path(environ, "HEALTH_CLIENT_CERT_FILE")
    client_key = _path(environ, "HEALTH_CLIENT_KEY_FILE")
    if (client_certificate is None or client_key is None) and _path(environ, "TLS_CLIENT_CA_FILE"):
        # The server's own certificate is for server authentication: TLS refuses it from a client.
        raise UsageError(
            f"{_PREFIX}TLS_CLIENT_CA_FILE asks clients for certificates: set "
            f"{_PREFIX}HEALTH_CLIENT_CERT_FILE and {_PREFIX}HEALTH_CLIENT_KEY_FILE to a client "
            "certificate that CA signed, and its key"
        )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(roots),
        private_key=_read(client_key) if client_key else None,
        certificate_chain=_read(client_certificate) if client_certificate else None,
    )
    return Probe(target, credentials, server_name)


def health_command(arguments: argparse.Namespace) -> int:
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        raise UsageError(
            "health needs the health service's stubs, which come with the server: "
            "pip install 'timeseries-aggregation[server]'"
        ) from None

    probe = probe_from_environment(os.environ)
    if probe.credentials is None:
        channel = grpc.insecure_channel(probe.target)
    else:
        options = [("grpc.ssl_target_name_override", probe.server_name)]
        channel = grpc.secure_channel(probe.target, probe.credentials, options=options)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=arguments.timeout
            )
        except grpc.RpcError as error:
            print(f"error: health check of {probe.target} failed: {error.code().name}", file=sys.stderr)
            return EXIT_CALL_FAILED
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_CALL_FAILED


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(_PREFIX + name)
    return Path(raw) if raw else None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path} ({error.strerror})") from None
