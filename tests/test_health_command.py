"""`timeseries-aggregation health`, what the container's HEALTHCHECK runs: it reads the server's
own settings from the environment and checks over plaintext, TLS and mutual TLS, without a key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.certificates import CertificateAuthority, Credentials
from tests.conftest import server_config
from tests.support import KEY_FILE
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.cli import EXIT_CALL_FAILED, EXIT_OK, EXIT_USAGE, main
from timeseries_aggregation.cli.exit_codes import UsageError
from timeseries_aggregation.cli.health_command import probe_from_environment
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

PREFIX = "TIMESERIES_AGGREGATION_"


# The settings the health command reads besides the listen address.
TLS_SETTINGS = (
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "TLS_CLIENT_CA_FILE",
    "HEALTH_CA_FILE",
    "HEALTH_SERVER_NAME",
    "HEALTH_CLIENT_CERT_FILE",
    "HEALTH_CLIENT_KEY_FILE",
)


@asynccontextmanager
async def keyed_server(
    database: Database, folder: Path, server: Credentials | None = None, client_ca: Path | None = None
) -> AsyncIterator[RunningServer]:
    """A server that wants API keys for the service (health stays open), TLS with credentials."""
    keys = folder / "api-keys"
    keys.write_text(KEY_FILE)
    config = server_config(
        auth_mode=AUTH_API_KEY,
        api_keys_file=keys,
        tls_cert_file=server.certificate if server else None,
        tls_key_file=server.key if server else None,
        tls_client_ca_file=client_ca,
    )
    async with grpc_server(database, config) as running:
        yield running


async def health(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], port: int, **settings: Path | str
) -> tuple[int, str, str]:
    """`timeseries-aggregation health` with the server's environment (names without the prefix)."""
    monkeypatch.setenv(PREFIX + "LISTEN_ADDRESS", f"127.0.0.1:{port}")
    for name in TLS_SETTINGS:
        monkeypatch.delenv(PREFIX + name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(PREFIX + name, str(value))
    code = await asyncio.to_thread(main, ["health", "--timeout", "5"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_probe_reaches_a_server_on_every_interface_on_loopback() -> None:
    assert probe_from_environment({f"{PREFIX}LISTEN_ADDRESS": "[::]:50051"}).target == "localhost:50051"
    assert probe_from_environment({f"{PREFIX}LISTEN_ADDRESS": "0.0.0.0:6000"}).target == "localhost:6000"
    assert probe_from_environment({}).target == "localhost:50051"
    with pytest.raises(UsageError, match="needs a fixed port"):
        probe_from_environment({f"{PREFIX}LISTEN_ADDRESS": "127.0.0.1:0"})


async def test_health_over_plaintext(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with keyed_server(database, tmp_path) as running:
        assert await health(monkeypatch, capsys, running.port) == (EXIT_OK, "SERVING\n", "")


async def test_health_over_tls_verified_by_the_servers_certificate_or_a_ca(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority(tmp_path)
    server = authority.issue("localhost", server=True)
    tls = {"TLS_CERT_FILE": server.certificate, "TLS_KEY_FILE": server.key}
    async with keyed_server(database, tmp_path, server) as running:
        # The server's own certificate is the probe's trust anchor, though a CA signed it.
        assert await health(monkeypatch, capsys, running.port, **tls) == (EXIT_OK, "SERVING\n", "")
        with_ca = tls | {"HEALTH_CA_FILE": authority.credentials.certificate}
        assert await health(monkeypatch, capsys, running.port, **with_ca) == (EXIT_OK, "SERVING\n", "")
        stranger = CertificateAuthority(tmp_path, name="other CA")
        wrong_ca = tls | {"HEALTH_CA_FILE": stranger.credentials.certificate}
        code, out, err = await health(monkeypatch, capsys, running.port, **wrong_ca)
        assert (code, out) == (EXIT_CALL_FAILED, "")
        assert err == f"error: health check of 127.0.0.1:{running.port} failed: UNAVAILABLE\n"
        # The name checked is localhost unless told otherwise.
        for settings in (tls, with_ca):
            misnamed = settings | {"HEALTH_SERVER_NAME": "timeseries.example.com"}
            assert (await health(monkeypatch, capsys, running.port, **misnamed))[0] == EXIT_CALL_FAILED

    # So is a certificate file that holds the chain up to its root.
    chain = tmp_path / "chain.crt"
    chain.write_bytes(server.certificate.read_bytes() + authority.credentials.certificate.read_bytes())
    async with keyed_server(database, tmp_path, Credentials(chain, server.key)) as running:
        tls = {"TLS_CERT_FILE": chain, "TLS_KEY_FILE": server.key}
        assert await health(monkeypatch, capsys, running.port, **tls) == (EXIT_OK, "SERVING\n", "")


async def test_health_over_mutual_tls(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority(tmp_path)
    server = authority.issue("localhost", server=True)
    probe = authority.issue("health-probe", server=False)
    mutual = {
        "TLS_CERT_FILE": server.certificate,
        "TLS_KEY_FILE": server.key,
        "TLS_CLIENT_CA_FILE": authority.credentials.certificate,
        "HEALTH_CA_FILE": authority.credentials.certificate,
    }
    async with keyed_server(database, tmp_path, server, authority.credentials.certificate) as running:
        with_probe = mutual | {
            "HEALTH_CLIENT_CERT_FILE": probe.certificate,
            "HEALTH_CLIENT_KEY_FILE": probe.key,
        }
        assert await health(monkeypatch, capsys, running.port, **with_probe) == (EXIT_OK, "SERVING\n", "")
        # Without a certificate of its own the probe has nothing the server accepts: it says so.
        code, out, err = await health(monkeypatch, capsys, running.port, **mutual)
        assert (code, out) == (EXIT_USAGE, "")
        assert "set TIMESERIES_AGGREGATION_HEALTH_CLIENT_CERT_FILE and" in err


async def test_an_unreadable_certificate_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.crt"
    code, out, err = await health(monkeypatch, capsys, 1, TLS_CERT_FILE=missing, TLS_KEY_FILE=missing)
    assert (code, out) == (EXIT_USAGE, "")
    assert err == f"error: cannot read {missing} (No such file or directory)\n"
