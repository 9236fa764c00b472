"""Channels and credentials for talking to the service."""

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

API_KEY_VARIABLE = "TIMESERIES_AGGREGATION_API_KEY"
# The command line's default --target, when set.
TARGET_VARIABLE = "TIMESERIES_AGGREGATION_TARGET"
DEFAULT_TARGET = "localhost:50051"


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the service is and how to prove who we are. A CA makes the channel TLS; a
    client certificate and key add mutual TLS."""

    target: str = DEFAULT_TARGET
    api_key: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls_ca is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes(),
            private_key=self.tls_key.read_bytes() if self.tls_key else None,
            certificate_chain=self.tls_cert.read_bytes() if self.tls_cert else None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.api_key)


def open_channel(connection: Connection) -> grpc.Channel:
    """A blocking channel: TLS when a CA is given (mutual with a certificate), else plaintext."""
    credentials = connection.credentials()
    if credentials is None:
        return grpc.insecure_channel(connection.target)
    return grpc.secure_channel(connection.target, credentials)


def open_aio_channel(connection: Connection) -> grpc.aio.Channel:
    """An asyncio channel for the same connection settings."""
    credentials = connection.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(connection.target)
    return grpc.aio.secure_channel(connection.target, credentials)


def auth_metadata(api_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents an API key: the one given, else $TIMESERIES_AGGREGATION_API_KEY,
    else none."""
    key = api_key or os.environ.get(API_KEY_VARIABLE)
    return (("authorization", f"Bearer {key}"),) if key else ()
