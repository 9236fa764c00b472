"""How a client command reaches the service, and what it says when a call fails."""

import argparse

import grpc

from timeseries_aggregation.cli.exit_codes import UsageError
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    DEFAULT_INGEST_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    ClientOptions,
    TimeseriesClient,
)

# What to do about the errors people meet most, by status code.
HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the server running and reachable at {target}? (retried already)",
    grpc.StatusCode.UNAUTHENTICATED: f"pass --api-key or set ${API_KEY_VARIABLE}",
    grpc.StatusCode.PERMISSION_DENIED: "ask for a key with the scope this command needs",
    grpc.StatusCode.DEADLINE_EXCEEDED: "it took longer than --timeout ({timeout:g} s); raise it",
    grpc.StatusCode.NOT_FOUND: "check the --series-id values; 'series' lists the catalog",
}


def open_client(arguments: argparse.Namespace) -> TimeseriesClient:
    if (arguments.tls_cert is None) != (arguments.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together (mutual TLS needs both)")
    if arguments.tls_cert is not None and arguments.tls_ca is None:
        raise UsageError("--tls-cert needs --tls-ca: mutual TLS is TLS first")
    options: ClientOptions = {
        "api_key": arguments.api_key,
        "tls_ca": arguments.tls_ca,
        "tls_cert": arguments.tls_cert,
        "tls_key": arguments.tls_key,
    }
    if arguments.timeout is not None:
        # For import, the deadline of the whole stream: every message and the final commit.
        options["timeout_seconds"] = options["ingest_timeout_seconds"] = arguments.timeout
    return TimeseriesClient(arguments.target, **options)


def call_failed(arguments: argparse.Namespace, error: grpc.RpcError) -> str:
    code = error.code()
    timeout = arguments.timeout or (
        DEFAULT_INGEST_TIMEOUT_SECONDS if arguments.command == "import" else DEFAULT_TIMEOUT_SECONDS
    )
    hint = HINTS.get(code, "").format(target=arguments.target, timeout=timeout)
    if arguments.command == "delete" and code == grpc.StatusCode.PERMISSION_DENIED and not arguments.yes:
        hint += " (delete needs the delete scope, and query to list the series before it asks)"
    stored = "; nothing was stored" if arguments.command == "import" else ""
    if arguments.command == "delete" and code == grpc.StatusCode.NOT_FOUND:
        stored = "; nothing was deleted"
    return f"error: {arguments.command} failed: {error.details()} ({code.name}){stored}" + (
        f"; {hint}" if hint else ""
    )
