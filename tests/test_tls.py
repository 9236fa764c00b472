"""TLS and mutual TLS on a real secure channel, with certificates made for the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from tests.certificates import CertificateAuthority, Credentials
from tests.conftest import server_config
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.cli import main
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
