"""TLS and mutual TLS on a real secure channel, with certificates made for the test."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from tests.certificates import CertificateAuthority, Credentials, install, presented_common_name
from tests.conftest import server_config
from tests.server_process import free_port, run_to_exit, server_env, start, stop
from tests.support import eventually, the_one_error
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.cli import main
from timeseries_aggregation.errors import StartupError
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@asynccontextmanager
async def tls_server(
    database: Database, server: Credentials, client_ca: Path | None = None
) -> AsyncIterator[RunningServer]:
    config = server_config(
        tls_cert_file=server.certificate, tls_key_file=server.key, tls_client_ca_file=client_ca
    )
    async with grpc_server(database, config) as running:
        yield running


async def query_over(channel: grpc.aio.Channel) -> grpc.StatusCode:
    stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
    try:
        await stub.ListQueryHistory(pb.ListQueryHistoryRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def credentials(
    authority: CertificateAuthority, client: Credentials | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=authority.credentials.certificate.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.certificate.read_bytes() if client else None,
    )


async def test_tls_serves_clients_that_trust_the_ca_and_only_over_tls(
    database: Database, authority: CertificateAuthority
) -> None:
    server = authority.issue("localhost", server=True)
    async with tls_server(database, server) as running:
        target = f"localhost:{running.port}"
        async with grpc.aio.secure_channel(target, credentials(authority)) as channel:
            assert await query_over(channel) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(target) as channel:
            assert await query_over(channel) == grpc.StatusCode.UNAVAILABLE
        stranger = CertificateAuthority(authority.folder, name="other CA")
        async with grpc.aio.secure_channel(target, credentials(stranger)) as channel:
            assert await query_over(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    database: Database, authority: CertificateAuthority
) -> None:
    server = authority.issue("localhost", server=True)
    client = authority.issue("meter-loader", server=False)
    outsider = CertificateAuthority(authority.folder, name="outsider CA").issue("intruder", server=False)
    async with tls_server(database, server, client_ca=authority.credentials.certificate) as running:
        target = f"localhost:{running.port}"
        async with grpc.aio.secure_channel(target, credentials(authority, client)) as channel:
            assert await query_over(channel) == grpc.StatusCode.OK
        async with grpc.aio.secure_channel(target, credentials(authority)) as channel:
            assert await query_over(channel) == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(target, credentials(authority, outsider)) as channel:
            assert await query_over(channel) == grpc.StatusCode.UNAVAILABLE


async def test_cli_connects_with_tls_options(
    database: Database, authority: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    server = authority.issue("localhost", server=True)
    client = authority.issue("analyst", server=False)
    async with tls_server(database, server, client_ca=authority.credentials.certificate) as running:
        arguments = [
            "history",
            "--target",
            f"localhost:{running.port}",
            "--tls-ca",
            str(authority.credentials.certificate),
            "--tls-cert",
            str(client.certificate),
            "--tls-key",
            str(client.key),
        ]
        assert await asyncio.to_thread(main, arguments) == 0
        assert capsys.readouterr().out.startswith("ran_at")


async def test_a_reload_serves_the_new_certificate_to_new_connections(
    database: Database, authority: CertificateAuthority, tmp_path: Path
) -> None:
    certificate, key = tmp_path / "server.crt", tmp_path / "server.key"
    install(authority.issue("localhost", server=True), certificate, key)
    renewed_by = CertificateAuthority(tmp_path, name="renewing CA")
    async with tls_server(database, Credentials(certificate, key)) as running:
        target = f"localhost:{running.port}"
        async with grpc.aio.secure_channel(target, credentials(authority)) as channel:
            assert await query_over(channel) == grpc.StatusCode.OK
            install(renewed_by.issue("renewed", server=True), certificate, key)
            await running.reload()  # what SIGHUP does
            # The open connection keeps its certificate; a new one gets the new certificate.
            assert await query_over(channel) == grpc.StatusCode.OK
        assert await asyncio.to_thread(presented_common_name, running.port) == "renewed"
        async with grpc.aio.secure_channel(target, credentials(renewed_by)) as channel:
            assert await query_over(channel) == grpc.StatusCode.OK


async def test_a_reload_reads_a_new_client_ca(database: Database, authority: CertificateAuthority) -> None:
    server = authority.issue("localhost", server=True)
    client_ca = authority.folder / "clients.crt"
    client_ca.write_bytes(authority.credentials.certificate.read_bytes())
    new_clients = CertificateAuthority(authority.folder, name="new client CA")
    client = new_clients.issue("meter-loader", server=False)
    async with tls_server(database, server, client_ca=client_ca) as running:
        target = f"localhost:{running.port}"
        async with grpc.aio.secure_channel(target, credentials(authority, client)) as channel:
            assert await query_over(channel) == grpc.StatusCode.UNAVAILABLE
        client_ca.write_bytes(new_clients.credentials.certificate.read_bytes())
        await running.reload()
        async with grpc.aio.secure_channel(target, credentials(authority, client)) as channel:
            assert await query_over(channel) == grpc.StatusCode.OK


@pytest.mark.parametrize("broken", ["key of another certificate", "encrypted key", "not PEM", "missing"])
async def test_a_broken_certificate_on_reload_keeps_the_one_in_force(
    database: Database,
    authority: CertificateAuthority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    certificate, key = tmp_path / "server.crt", tmp_path / "server.key"
    install(authority.issue("localhost", server=True), certificate, key)
    async with tls_server(database, Credentials(certificate, key)) as running:
        secret = key.read_bytes()
        if broken == "key of another certificate":
            key.write_bytes(authority.issue("other", server=True).key.read_bytes())
            secret = key.read_bytes()
        elif broken == "encrypted key":
            # Without a terminal to ask for its password on: the reload must not wait for one.
            private_key = serialization.load_pem_private_key(secret, password=None)
            key.write_bytes(
                private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"password"),
                )
            )
        elif broken == "not PEM":
            certificate.write_text("not a certificate")
        else:
            key.unlink()
        with caplog.at_level(logging.INFO):
            await running.reload()
        [error] = [record for record in caplog.records if record.levelno == logging.ERROR]
        assert error.getMessage().startswith("TLS certificate not reloaded, keeping the one in force: ")
        assert str(key) in error.getMessage() or str(certificate) in error.getMessage()
        assert secret.decode() not in caplog.text
        assert await asyncio.to_thread(presented_common_name, running.port) == "localhost"
        async with grpc.aio.secure_channel(f"localhost:{running.port}", credentials(authority)) as channel:
            assert await query_over(channel) == grpc.StatusCode.OK


async def test_a_certificate_that_does_not_match_its_key_stops_the_start(
    database: Database, authority: CertificateAuthority
) -> None:
    server = authority.issue("localhost", server=True)
    other = authority.issue("other", server=True)
    with pytest.raises(StartupError, match=f"{server.certificate} and {other.key} are not"):
        async with tls_server(database, Credentials(server.certificate, other.key)):
            pass


async def test_a_broken_certificate_stops_the_server_before_the_database_with_one_log_line(
    database_url: str, authority: CertificateAuthority, tmp_path: Path
) -> None:
    certificate = authority.issue("localhost", server=True).certificate
    key = tmp_path / "server.key"
    key.write_text("not a key")
    result = await run_to_exit(
        server_env(
            database_url,
            free_port(),
            LOG_FORMAT="json",
            TLS_CERT_FILE=str(certificate),
            TLS_KEY_FILE=str(key),
        )
    )
    assert result.returncode == 1
    assert the_one_error(result) == (
        f"TIMESERIES_AGGREGATION_TLS_CERT_FILE, _KEY_FILE, _CLIENT_CA_FILE: {certificate} and {key} are "
        "not a PEM certificate chain and its private key"
    )
    assert "database" not in result.stderr


async def test_sighup_renews_the_certificate_of_every_worker(
    database_url: str,
    authority: CertificateAuthority,
    tmp_path: Path,
    cleanup: list[subprocess.Popen[bytes]],
) -> None:
    certificate, key = tmp_path / "server.crt", tmp_path / "server.key"
    install(authority.issue("first", server=True), certificate, key)
    port = free_port()
    env = server_env(database_url, port, TLS_CERT_FILE=str(certificate), TLS_KEY_FILE=str(key))
    supervisor = start(env, tmp_path / "server.log", ["--workers", "2"])
    cleanup.append(supervisor)

    async def presents(name: str) -> None:
        # Connections land on either worker: every one of a few must present the name.
        for _ in range(8):
            try:
                assert await asyncio.to_thread(presented_common_name, port) == name
            except OSError as error:
                raise AssertionError(f"no TLS connection: {error}") from None

    await eventually(lambda: presents("first"), within=30, interval=0.2)
    install(authority.issue("second", server=True), certificate, key)
    supervisor.send_signal(signal.SIGHUP)
    await eventually(lambda: presents("second"), within=10)
    assert supervisor.poll() is None
    assert await stop(supervisor) == 0
