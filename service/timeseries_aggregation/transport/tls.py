"""The server's TLS certificate, key and client CA: read at start, re-read on SIGHUP.

gRPC asks the fetcher for a new configuration before every TLS handshake, so a reload
reaches the next connection; connections already open keep the certificate they began with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)


class CertificateError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file, never a key."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """The PEM files TLS is configured with; client_ca None: clients need no certificate."""

    certificate: Path
    key: Path
    client_ca: Path | None = None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CertificateError(f"cannot read {path}: {error.strerror}") from None


class _EncryptedKeyError(Exception):
    pass


def _refuse_a_password() -> bytes:
    # Without a password callback, OpenSSL would ask for one on the terminal and wait.
    raise _EncryptedKeyError


def _checked(files: CertificateFiles) -> grpc.ServerCertificateConfiguration:
    """The files' content, once OpenSSL has parsed it and matched the key to the certificate.

    gRPC would only find a broken file at the next handshake, and fail every one of them.
    The files are read before and after OpenSSL reads them (it reads paths only), so what
    gRPC gets is what was checked, not half of a rewrite.
    """
    certificate, key = _read(files.certificate), _read(files.key)
    client_ca = _read(files.client_ca) if files.client_ca else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.certificate, files.key, password=_refuse_a_password)
    except _EncryptedKeyError:
        raise CertificateError(f"{files.key} is encrypted; gRPC needs the key unencrypted") from None
    except (ssl.SSLError, OSError):
        # OpenSSL's reason would not say which file is at fault, and may quote the key's bytes.
        raise CertificateError(
            f"{files.certificate} and {files.key} are not a PEM certificate chain and its private key"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise CertificateError(f"{files.client_ca} holds no PEM CA certificate") from None
    if (_read(files.certificate), _read(files.key)) != (certificate, key):
        raise CertificateError(f"{files.certificate} or {files.key} changed while being read")
    return grpc.ssl_server_certificate_configuration([(key, certificate)], root_certificates=client_ca)


class ServerCertificates:
    """The certificate configuration in force, replaced by reload() for the next handshake."""

    def __init__(self, files: CertificateFiles) -> None:
        """Raises CertificateError for files that cannot serve."""
        self._files = files
        self._initial = _checked(files)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        # reload() runs on the event loop, _fetch() on gRPC's threads.
        self._lock = threading.Lock()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,  # type: ignore[arg-type]  # the stub lacks the None that means "no change"
            require_client_authentication=self._files.client_ca is not None,
        )

    def reload(self) -> None:
        """Re-read the files; a broken one is logged and leaves the certificate in force."""
        try:
            checked = _checked(self._files)
        except CertificateError as error:
            logger.error("TLS certificate not reloaded, keeping the one in force: %s", error)
            return
        with self._lock:
            self._pending = checked
        logger.info("TLS certificate reloaded from %s", self._files.certificate)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC, on one of its threads, before each handshake: the new configuration
        once after a reload, otherwise None (no change)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
