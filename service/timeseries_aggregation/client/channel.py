"""Channels and credentials for talking to the service."""

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

API_KEY_VARIABLE = "TIMESERIES_AGGREGATION_API_KEY"
# The command line's default --target, when set.
TARGET_VARIABLE = "TIMESERIES_AGGREGATION_TARGET"
DEFAULT_TARGET = "localhost:50051"


class InsecureChannelError(ValueError):
    """An API key would go in clear text to a server that is not on this machine."""


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the service is and how to prove who we are.

    The channel is TLS when `tls` is set or a CA is given: the CA verifies the server, else
    the system's CA store does (system_root_certificates). A client certificate and key add
    mutual TLS. A key goes over plaintext only to a loopback target, or where the caller
    says the network is trusted (`insecure_trusted_network`).
    """

    target: str = DEFAULT_TARGET
    api_key: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls: bool = False
    insecure_trusted_network: bool = False

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.uses_tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=(
                self.tls_ca.read_bytes() if self.tls_ca is not None else system_root_certificates()
            ),
            private_key=self.tls_key.read_bytes() if self.tls_key else None,
            certificate_chain=self.tls_cert.read_bytes() if self.tls_cert else None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.api_key)

    def check_key_protected(self) -> None:
        """Raise InsecureChannelError when the metadata holds a key and the channel would carry
        it in clear text beyond this machine without the caller having said that is fine."""
        if self.uses_tls or self.insecure_trusted_network or not self.metadata():
            return
        if is_loopback_target(self.target):
            return
        raise InsecureChannelError(
            f"refusing to send an API key in clear text to {self.target}: use TLS (tls=True to "
            "verify the server with the system's CAs, or tls_ca=PATH), or, where the network to "
            "the server is trusted, say so with insecure_trusted_network=True"
        )


def open_channel(connection: Connection) -> grpc.Channel:
    """A blocking channel: TLS when asked for (mutual with a certificate), else plaintext.
    Raises InsecureChannelError before connecting when a key would travel unprotected."""
    connection.check_key_protected()
    credentials = connection.credentials()
    if credentials is None:
        return grpc.insecure_channel(connection.target)
    return grpc.secure_channel(connection.target, credentials)


def open_aio_channel(connection: Connection) -> grpc.aio.Channel:
    """An asyncio channel for the same connection settings."""
    connection.check_key_protected()
    credentials = connection.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(connection.target)
    return grpc.aio.secure_channel(connection.target, credentials)


def auth_metadata(api_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents an API key: the one given, else $TIMESERIES_AGGREGATION_API_KEY,
    else none."""
    key = api_key or os.environ.get(API_KEY_VARIABLE)
    return (("authorization", f"Bearer {key}"),) if key else ()


def system_root_certificates() -> bytes | None:
    """The CA bundle of the system's OpenSSL (the file $SSL_CERT_FILE names, else OpenSSL's
    default one), which is where operators add their own CAs; None when there is none, and then
    gRPC uses the roots it ships (or $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None:
        return None
    try:
        return Path(cafile).read_bytes()
    except OSError:
        return None


# Hosts that name this machine. gRPC resolves "localhost" itself, not through DNS.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
# Schemes of gRPC targets that never leave the machine (Unix domain sockets).
_LOCAL_SCHEMES = ("unix:", "unix-abstract:")


def is_loopback_target(target: str) -> bool:
    """Whether a gRPC target (HOST:PORT, [IPV6]:PORT, dns:///HOST:PORT, ipv4:/ipv6: address
    lists, unix:PATH) can only reach this machine. Anything unclear counts as remote."""
    if target.startswith(_LOCAL_SCHEMES):
        return True
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            addresses = target.removeprefix(scheme).split(",")
            return all(_is_loopback_host(_host_of(address)) for address in addresses)
    if target.startswith("dns:"):
        path = target.removeprefix("dns:")
        if not path.startswith("///"):
            return False  # dns://AUTHORITY/...: another resolver decides where it goes
        target = path.removeprefix("///")
    elif "://" in target:
        return False  # another resolver (xds, passthrough...) decides where it goes
    return _is_loopback_host(_host_of(target))


def _host_of(address: str) -> str:
    """The host of HOST, HOST:PORT or [IPV6]:PORT."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") > 1:
        return address  # a bare IPv6 address, without a port
    return address.partition(":")[0]


def _is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
