"""The `serve` command as an operator runs it: a real process, signals, and secrets kept out of logs."""

import errno
import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest

from tests.server_process import (
    free_port,
    run_to_exit,
    serve_on,
    start,
    stop,
    wait_serving,
)
from tests.support import the_one_error
from timeseries_aggregation.app import RunningServer
from timeseries_aggregation.config import DEFAULT_LISTEN_ADDRESS, ENV_PREFIX, split_host_port

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

CANARY_PASSWORD = "canary-secret-7f3a"


def with_user(url: str, user: str | None, password: str) -> str:
    """The URL with this user (None: its own, or postgres) and password."""
    parts = urlsplit(url)
    credentials = (user or parts.username or "postgres") + ":" + password
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


@pytest.fixture
def cleanup_dirs() -> Iterator[list[Path]]:
    folders: list[Path] = []
    yield folders
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


async def test_serves_on_a_configured_database_and_never_logs_its_password(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    url_file = tmp_path / "database-url"
    url_file.write_text(with_user(database_url, None, CANARY_PASSWORD) + "\n")
    process = start(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL_FILE": str(url_file),
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
            "TIMESERIES_AGGREGATION_LOG_LEVEL": "DEBUG",
        },
        log,
    )
    cleanup.append(process)
    await wait_serving(port)
    assert await stop(process) == 0
    output = log.read_text()
    assert "serving timeseries.v1.TimeseriesAggregationService" in output
    assert CANARY_PASSWORD not in output


async def serve_embedded(
    log: Path,
    cleanup: list[subprocess.Popen[bytes]],
    cleanup_dirs: list[Path],
    environment: dict[str, str],
) -> tuple[subprocess.Popen[bytes], Path]:
    """A server with no database configured, so on its embedded one, serving; and the folder
    holding that database's data."""
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="timeseries-aggregation-serve-"))  # see new_embedded_postgres()
    cleanup_dirs.append(data_dir)
    process = start(
        {
            "TIMESERIES_AGGREGATION_DATA_DIR": str(data_dir),
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
            **environment,
        },
        log,
    )
    cleanup.append(process)
    await wait_serving(port)
    return process, data_dir


async def test_serves_on_an_embedded_database_without_configuration(
    tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], cleanup_dirs: list[Path]
) -> None:
    log = tmp_path / "server.log"
    process, data_dir = await serve_embedded(log, cleanup, cleanup_dirs, {})
    assert (data_dir / "pgdata" / "postmaster.pid").exists()
    assert await stop(process) == 0
    output = log.read_text()
    assert str(data_dir / "pgdata") in output  # the log names where the data lives
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # and the database was stopped


async def test_without_a_listen_address_it_serves_on_loopback_only(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    """As `make run` starts it, authentication off: no other machine may reach it."""
    port = split_host_port(DEFAULT_LISTEN_ADDRESS)[1]
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            pytest.skip(f"port {port}, the default, is taken on this machine: {error}")
    process = start(
        {f"{ENV_PREFIX}DATABASE_URL": database_url, f"{ENV_PREFIX}AUTH_MODE": "none"},
        tmp_path / "server.log",
        unset=[f"{ENV_PREFIX}LISTEN_ADDRESS"],
    )
    cleanup.append(process)
    await wait_serving(port)
    listening = {
        connection.laddr.ip
        for connection in psutil.Process(process.pid).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }
    assert await stop(process) == 0
    assert listening
    assert all(is_loopback(address) for address in listening), listening


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 and ::1, also as gRPC binds an IPv4 address on an IPv6 socket (::ffff:127.0.0.1)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


async def test_a_json_log_is_json_to_its_last_line(
    tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], cleanup_dirs: list[Path]
) -> None:
    """From start to stop, with the embedded database: gRPC's own text lines (such as its fork
    handlers' note when the database stops) would break a reader of JSON lines."""
    log = tmp_path / "server.log"
    json_log = {"TIMESERIES_AGGREGATION_LOG_FORMAT": "json"}
    process, _ = await serve_embedded(log, cleanup, cleanup_dirs, json_log)
    assert await stop(process) == 0
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(entries) == len(lines), [line for line in lines if not line.startswith("{")]
    assert entries[-1]["message"] == "stopped embedded PostgreSQL"


async def test_bad_configuration_exits_with_a_message_naming_the_variable() -> None:
    result = await run_to_exit({"TIMESERIES_AGGREGATION_POOL_MAX_SIZE": "many"})
    assert result.returncode == 2
    assert "TIMESERIES_AGGREGATION_POOL_MAX_SIZE" in result.stderr


async def test_a_second_server_on_a_served_port_exits_instead_of_sharing_it(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    first, port = await serve_on(database_url, tmp_path / "first.log", cleanup)
    second = await run_to_exit(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
        }
    )
    assert second.returncode == 1
    assert the_one_error(second) == (
        f"cannot listen on TIMESERIES_AGGREGATION_LISTEN_ADDRESS=127.0.0.1:{port}: the port is in use "
        "by another process; stop it or choose another port"
    )
    await wait_serving(port)  # the first server is untouched
    assert await stop(first) == 0


async def test_a_port_taken_by_another_program_is_one_log_line(database_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = await run_to_exit(
            {
                "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
                "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
                "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
            }
        )
    assert result.returncode == 1
    assert f"LISTEN_ADDRESS=127.0.0.1:{port}: the port is in use" in the_one_error(result)
    # Checked before anything else starts.
    assert "database" not in result.stderr


async def test_an_address_of_another_machine_is_one_log_line(database_url: str) -> None:
    address = "192.0.2.1:50051"  # TEST-NET-1 (RFC 5737): never an address of this machine
    result = await run_to_exit(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": address,
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
        }
    )
    assert result.returncode == 1
    assert the_one_error(result) == (
        f"cannot listen on TIMESERIES_AGGREGATION_LISTEN_ADDRESS={address}: no network interface of "
        "this machine has that address"
    )
    assert "database" not in result.stderr


async def test_the_server_does_not_let_other_sockets_share_its_port(server: RunningServer) -> None:
    # gRPC sets SO_REUSEPORT by default: two servers on one port would split the calls.
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError, match="in use") as refused:
            intruder.bind(("127.0.0.1", server.port))
    assert refused.value.errno == errno.EADDRINUSE


async def test_a_database_refusing_the_user_is_one_log_line_saying_what_to_check(
    database_url: str,
) -> None:
    result = await run_to_exit(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL": with_user(database_url, "nobody-here", CANARY_PASSWORD),
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
        }
    )
    assert result.returncode == 1
    message = the_one_error(result)
    # InvalidAuthorizationSpecificationError where the server trusts local users, else InvalidPasswordError.
    assert message.startswith("the database refused the connection (Invalid")
    assert message.endswith("): check the user name, password and database name in the database URL")
    assert CANARY_PASSWORD not in result.stderr


async def test_an_unreachable_database_is_one_log_line_saying_what_to_check() -> None:
    result = await run_to_exit(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
            "TIMESERIES_AGGREGATION_STARTUP_TIMEOUT_SECONDS": "1",
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
        }
    )
    assert result.returncode == 1
    assert the_one_error(result) == (
        "the database did not accept connections within 1 s (ConnectionRefusedError): check the host and "
        "port in the database URL, and that the database is running"
    )


async def test_a_key_file_without_keys_is_one_log_line_before_the_database_starts(
    database_url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# every key was removed\n")
    result = await run_to_exit(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "api-key",
            "TIMESERIES_AGGREGATION_API_KEYS_FILE": str(keys),
        }
    )
    assert result.returncode == 1
    assert the_one_error(result) == (
        "TIMESERIES_AGGREGATION_API_KEYS_FILE: the file holds no key; add one with "
        "`timeseries-aggregation keys generate`"
    )
    assert "database" not in result.stderr


async def test_sighup_with_nothing_to_reload_leaves_the_server_serving(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    # Without API keys or TLS: SIGHUP's default action would end the process.
    process, port = await serve_on(database_url, tmp_path / "server.log", cleanup)
    process.send_signal(signal.SIGHUP)
    process.send_signal(signal.SIGHUP)
    await wait_serving(port)
    assert process.poll() is None
    assert await stop(process) == 0
