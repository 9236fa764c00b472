"""How the command line's client commands reach the service: the key from the environment or a
file (never the command line), TLS with the system's CAs, and no key in clear text beyond this
machine unless told the network is trusted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.certificates import CertificateAuthority
from tests.conftest import server_config
from tests.support import KEY_FILE, READER
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.cli import EXIT_CALL_FAILED, EXIT_USAGE, main
from timeseries_aggregation.client import API_KEY_VARIABLE
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

KEY_FILE_VARIABLE = "TIMESERIES_AGGREGATION_API_KEY_FILE"
TRUSTED_VARIABLE = "TIMESERIES_AGGREGATION_INSECURE_TRUSTED_NETWORK"
# What `history` prints when no query was made: the header alone.
EMPTY_HISTORY = "ran_at  caller  series_id  granularity  start_time  end_time  time_zone  buckets\n"
ON_THE_COMMAND_LINE = "tsa_on_the_command_line"


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The CLI makes blocking gRPC calls; run it off the loop that serves them.
    exit_code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (API_KEY_VARIABLE, KEY_FILE_VARIABLE, TRUSTED_VARIABLE):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def server_with_keys(database: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    keys = tmp_path / "api-keys"
    keys.write_text(KEY_FILE)
    async with grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running:
        yield running


async def test_the_key_comes_from_the_environment_or_a_file(
    server_with_keys: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = ("history", "--target", f"localhost:{server_with_keys.port}")
    code, _, err = await run_cli(capsys, *history)
    assert code == EXIT_CALL_FAILED
    assert "(UNAUTHENTICATED); set $TIMESERIES_AGGREGATION_API_KEY or pass --api-key-file PATH" in err

    monkeypatch.setenv(API_KEY_VARIABLE, READER)
    assert await run_cli(capsys, *history) == (0, EMPTY_HISTORY, "")
    monkeypatch.delenv(API_KEY_VARIABLE)

    key_file = tmp_path / "reader.key"
    key_file.write_text(f"{READER}\n")  # as an editor or `echo` leaves it
    assert await run_cli(capsys, *history, "--api-key-file", str(key_file)) == (
        0,
        EMPTY_HISTORY,
        "",
    )
    monkeypatch.setenv(KEY_FILE_VARIABLE, str(key_file))
    assert await run_cli(capsys, *history) == (0, EMPTY_HISTORY, "")
    # --api-key-file wins over the environment.
    monkeypatch.setenv(API_KEY_VARIABLE, "tsa_revoked")
    assert (await run_cli(capsys, *history, "--api-key-file", str(key_file)))[0] == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read (No such file or directory)"),
        (b"", "must hold one API key and nothing else"),
        (b"tsa_one tsa_two\n", "must hold one API key and nothing else"),
        (b"\xfftsa_\xfe", "is not UTF-8 text"),
    ],
)
def test_a_key_file_that_holds_no_single_key_is_a_usage_error(
    content: bytes | None, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_bytes(content)
    # Nothing listens on port 1: the command stops before any call.
    assert main(["history", "--target", "127.0.0.1:1", "--api-key-file", str(key_file)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: --api-key-file: {key_file}")
    assert problem in err
    assert "tsa_" not in err


@pytest.mark.parametrize(
    "argv", [["--api-key", "tsa_on_the_command_line"], ["--api-key=tsa_on_the_command_line"]]
)
def test_a_key_on_the_command_line_is_refused_without_repeating_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["history", "--target", "127.0.0.1:1", *argv])
    assert stopped.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--api-key is not accepted: a key on the command line shows in process listings" in err
    assert "set $TIMESERIES_AGGREGATION_API_KEY or pass --api-key-file PATH" in err
    assert ON_THE_COMMAND_LINE not in err
    with pytest.raises(SystemExit):
        main(["history", "--help"])
    assert "--api-key " not in capsys.readouterr().out


async def test_a_key_goes_in_clear_text_beyond_loopback_only_on_a_trusted_network(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_VARIABLE, READER)
    # Refused before any connection: the name does not even resolve.
    code, out, err = await run_cli(capsys, "history", "--target", "meters.example.invalid:50051")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == (
        "error: refusing to send the API key in clear text to meters.example.invalid:50051: use "
        "--tls (the system's CAs verify the server) or --tls-ca PATH, or, where the network to the "
        "server is trusted, --insecure-trusted-network (or "
        "$TIMESERIES_AGGREGATION_INSECURE_TRUSTED_NETWORK=1)\n"
    )
    keys = tmp_path / "api-keys"
    keys.write_text(KEY_FILE)
    # The machine's own name counts as remote; the server listens on that name's address only.
    host = socket.gethostname()
    listen = f"{socket.gethostbyname(host)}:0"
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys, listen_address=listen)
    async with grpc_server(database, config) as running:
        history = ("history", "--target", f"{host}:{running.port}")
        assert (await run_cli(capsys, *history))[0] == EXIT_USAGE
        assert await run_cli(capsys, *history, "--insecure-trusted-network") == (
            0,
            EMPTY_HISTORY,
            "",
        )
        monkeypatch.setenv(TRUSTED_VARIABLE, "1")
        assert (await run_cli(capsys, *history))[0] == 0
        monkeypatch.setenv(TRUSTED_VARIABLE, "perhaps")
        code, _, err = await run_cli(capsys, *history)
        assert (code, err) == (
            EXIT_USAGE,
            "error: $TIMESERIES_AGGREGATION_INSECURE_TRUSTED_NETWORK must be 1 or 0, got 'perhaps'\n",
        )


async def test_tls_verifies_the_server_with_the_system_store(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority(tmp_path)
    server = authority.issue("localhost", server=True)
    config = server_config(tls_cert_file=server.certificate, tls_key_file=server.key)
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.credentials.certificate))
    async with grpc_server(database, config) as running:
        history = ("history", "--target", f"localhost:{running.port}", "--timeout", "5")
        assert await run_cli(capsys, *history, "--tls") == (0, EMPTY_HISTORY, "")
