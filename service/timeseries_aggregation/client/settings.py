"""What both clients are configured with: where, as whom, how long, how often."""

from pathlib import Path
from typing import TypedDict

from timeseries_aggregation.client.channel import DEFAULT_TARGET, Connection
from timeseries_aggregation.client.retry import RetryPolicy
from timeseries_aggregation.client.trace_context import trace_metadata

# Deadlines of a call, and of a whole ingest stream, unless the client is told otherwise.
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_INGEST_TIMEOUT_SECONDS = 3600.0


class ClientOptions(TypedDict, total=False):
    """The keyword options of both clients."""

    api_key: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    tls: bool
    insecure_trusted_network: bool
    timeout_seconds: float
    ingest_timeout_seconds: float
    retry: RetryPolicy | None


class ClientSettings:
    """Shared by TimeseriesClient and AsyncTimeseriesClient: the connection, the metadata
    sent with every call, the deadlines and the retry policy.

    `tls=True` verifies the server with the system's CAs, `tls_ca` with that CA instead. An API
    key goes over plaintext only to localhost, 127.0.0.1 or [::1], unless
    `insecure_trusted_network=True` says the network is trusted: else InsecureChannelError.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls: bool = False,
        insecure_trusted_network: bool = False,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        ingest_timeout_seconds: float = DEFAULT_INGEST_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._connection = Connection(
            target, api_key, tls_ca, tls_cert, tls_key, tls, insecure_trusted_network
        )
        self._static_metadata = self._connection.metadata()
        self._timeout = timeout_seconds
        self._ingest_timeout = ingest_timeout_seconds
        self._retry = retry or RetryPolicy()

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of a call made now: the credentials, and the caller's current trace
        context so that the service's spans join its trace."""
        return self._static_metadata + trace_metadata()
