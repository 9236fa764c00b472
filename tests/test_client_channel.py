"""The clients' channels: no API key in clear text beyond this machine unless the caller says the
network is trusted, and TLS verified by the system's CAs on request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.certificates import CertificateAuthority
from tests.conftest import server_config
from tests.support import KEY_FILE, READER
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    AsyncTimeseriesClient,
    InsecureChannelError,
    RetryPolicy,
    TimeseriesClient,
    is_loopback_target,
)
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

# Never reached: the clients refuse before they open a connection. (.invalid never resolves.)
REMOTE_TARGETS = ["meters.example.invalid:50051", "192.0.2.10:50051", "[2001:db8::1]:50051"]


@pytest.fixture
async def keyed_server(database: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    keys = tmp_path / "api-keys"
    keys.write_text(KEY_FILE)
    async with grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running:
        yield running


@pytest.mark.parametrize(
    "target",
    [
        "localhost:50051",
        "LOCALHOST:1",
        "127.0.0.1:50051",
        "127.8.9.10:50051",
        "[::1]:50051",
        "dns:///localhost:50051",
        "ipv4:127.0.0.1:1,127.0.0.2:2",
        "ipv6:[::1]:50051",
        "unix:/run/timeseries.sock",
        "localhost",
    ],
)
def test_loopback_targets(target: str) -> None:
    assert is_loopback_target(target)


@pytest.mark.parametrize(
    "target",
    [
        *REMOTE_TARGETS,
        "localhost.example.com:50051",
        "dns://8.8.8.8/localhost:50051",
        "ipv4:127.0.0.1:1,10.0.0.1:2",
        "[::ffff:10.0.0.1]:50051",
        "0.0.0.0:50051",
    ],
)
def test_other_targets_count_as_remote(target: str) -> None:
    assert not is_loopback_target(target)


@pytest.mark.parametrize("target", REMOTE_TARGETS)
async def test_a_key_over_plaintext_to_a_remote_target_is_refused_before_connecting(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InsecureChannelError, match="refusing to send an API key in clear text") as refused:
        TimeseriesClient(target, api_key="tsa_secret")
    assert "tsa_secret" not in str(refused.value)
    with pytest.raises(InsecureChannelError, match="insecure_trusted_network=True"):
        AsyncTimeseriesClient(target, api_key="tsa_secret")
    # A key from the environment is a key all the same.
    monkeypatch.setenv(API_KEY_VARIABLE, "tsa_from_env")
    with pytest.raises(InsecureChannelError):
        TimeseriesClient(target)
    monkeypatch.delenv(API_KEY_VARIABLE)
    # Without a key there is nothing to protect.
    TimeseriesClient(target).close()


async def test_a_key_goes_over_plaintext_where_the_network_is_said_to_be_trusted(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    keys = tmp_path / "api-keys"
    keys.write_text(KEY_FILE)
    # The machine's own name: the client cannot tell that it names this machine, so it counts
    # as remote. The server listens on that name's address only, so nothing leaves the machine.
    host = socket.gethostname()
    address = socket.gethostbyname(host)
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys, listen_address=f"{address}:0")
    async with grpc_server(database, config) as running:
        target = f"{host}:{running.port}"
        assert not is_loopback_target(target)
        with pytest.raises(InsecureChannelError):
            TimeseriesClient(target, api_key=READER)

        def blocking() -> int:
            with TimeseriesClient(target, api_key=READER, insecure_trusted_network=True) as client:
                return len(list(client.history()))

        assert await asyncio.to_thread(blocking) == 0
        async with AsyncTimeseriesClient(target, api_key=READER, insecure_trusted_network=True) as client:
            assert [entry async for entry in client.history()] == []


async def test_a_key_goes_over_plaintext_to_loopback_without_the_flag(keyed_server: RunningServer) -> None:
    # `make run` serves on localhost without TLS, and the README's examples call it so.
    for host in ("localhost", "127.0.0.1"):
        async with AsyncTimeseriesClient(f"{host}:{keyed_server.port}", api_key=READER) as client:
            assert [entry async for entry in client.history()] == []


async def test_tls_without_a_ca_file_verifies_the_server_with_the_system_store(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority(tmp_path)
    stranger = CertificateAuthority(tmp_path, name="other CA")
    server = authority.issue("localhost", server=True)
    config = server_config(tls_cert_file=server.certificate, tls_key_file=server.key)
    # gRPC's own roots are the stranger's: only the system store can make the call succeed.
    monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(stranger.credentials.certificate))
    async with grpc_server(database, config) as running:
        target = f"localhost:{running.port}"
        monkeypatch.setenv("SSL_CERT_FILE", str(authority.credentials.certificate))
        async with AsyncTimeseriesClient(target, tls=True, timeout_seconds=5) as client:
            assert [entry async for entry in client.history()] == []

        def blocking() -> int:
            with TimeseriesClient(target, tls=True, timeout_seconds=5) as client:
                return len(list(client.history()))

        assert await asyncio.to_thread(blocking) == 0
        # A system store without the server's CA: the handshake fails.
        monkeypatch.setenv("SSL_CERT_FILE", str(stranger.credentials.certificate))
        once = RetryPolicy(max_attempts=1)
        async with AsyncTimeseriesClient(target, tls=True, timeout_seconds=5, retry=once) as client:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                [entry async for entry in client.history()]
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_key_goes_to_a_remote_target_over_tls_without_the_flag() -> None:
    # TLS protects the key: the client is made (no server needed, nothing is called).
    async with AsyncTimeseriesClient(REMOTE_TARGETS[0], api_key="tsa_secret", tls=True):
        pass
