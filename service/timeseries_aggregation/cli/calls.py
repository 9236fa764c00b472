"""How a client command reaches the service, and what it says when a call fails."""

import argparse
import os
from pathlib import Path

import grpc

from timeseries_aggregation.cli.exit_codes import UsageError
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    DEFAULT_INGEST_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    ClientOptions,
    InsecureChannelError,
    TimeseriesClient,
)

# The CLI's other sources of a key, which keep it out of process listings (there is no --api-key).
API_KEY_FILE_VARIABLE = "TIMESERIES_AGGREGATION_API_KEY_FILE"
# The default of --insecure-trusted-network, for scripts on a network their operator trusts.
INSECURE_TRUSTED_NETWORK_VARIABLE = "TIMESERIES_AGGREGATION_INSECURE_TRUSTED_NETWORK"

# What to do about the errors people meet most, by status code.
HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the server running and reachable at {target}? (retried already)",
    grpc.StatusCode.UNAUTHENTICATED: f"set ${API_KEY_VARIABLE} or pass --api-key-file PATH",
    grpc.StatusCode.PERMISSION_DENIED: "ask for a key with the scope this command needs",
    grpc.StatusCode.DEADLINE_EXCEEDED: "it took longer than --timeout ({timeout:g} s); raise it",
    grpc.StatusCode.NOT_FOUND: "check the --series-id values; 'series' lists the catalog",
}


def open_client(arguments: argparse.Namespace) -> TimeseriesClient:
    if (arguments.tls_cert is None) != (arguments.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together (mutual TLS needs both)")
    if arguments.tls_cert is not None and arguments.tls_ca is None and not arguments.tls:
        raise UsageError("--tls-cert needs --tls or --tls-ca: mutual TLS is TLS first")
    options: ClientOptions = {
        "api_key": api_key(arguments.api_key_file),
        "tls": arguments.tls,
        "tls_ca": arguments.tls_ca,
        "tls_cert": arguments.tls_cert,
        "tls_key": arguments.tls_key,
        "insecure_trusted_network": arguments.insecure_trusted_network
        or _switched_on(INSECURE_TRUSTED_NETWORK_VARIABLE),
    }
    if arguments.timeout is not None:
        # For import, the deadline of the whole stream: every message and the final commit.
        options["timeout_seconds"] = options["ingest_timeout_seconds"] = arguments.timeout
    try:
        return TimeseriesClient(arguments.target, **options)
    except InsecureChannelError:
        raise UsageError(
            f"refusing to send the API key in clear text to {arguments.target}: use --tls (the "
            f"system's CAs verify the server) or --tls-ca PATH, or, where the network to the server "
            f"is trusted, --insecure-trusted-network (or ${INSECURE_TRUSTED_NETWORK_VARIABLE}=1)"
        ) from None


def api_key(key_file: Path | None) -> str | None:
    """The key: from --api-key-file, else $TIMESERIES_AGGREGATION_API_KEY, else the file that
    $TIMESERIES_AGGREGATION_API_KEY_FILE names, else none."""
    if key_file is None:
        if os.environ.get(API_KEY_VARIABLE):
            return os.environ[API_KEY_VARIABLE]
        named = os.environ.get(API_KEY_FILE_VARIABLE)
        if not named:
            return None
        key_file, source = Path(named), f"${API_KEY_FILE_VARIABLE}"
    else:
        source = "--api-key-file"
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise UsageError(f"{source}: {key_file} cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        # The decode error would quote the file's bytes, i.e. the key.
        raise UsageError(f"{source}: {key_file} is not UTF-8 text") from None
    if not key or any(character.isspace() for character in key):
        raise UsageError(f"{source}: {key_file} must hold one API key and nothing else")
    return key


def _switched_on(name: str) -> bool:
    """An on/off environment variable: 1, true or yes is on; unset, empty, 0, false or no off."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise UsageError(f"${name} must be 1 or 0, got {raw!r}")


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
