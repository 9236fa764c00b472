"""No part of the database URL reaches stderr, whatever it holds: malformed URLs are refused at
the edge with one line naming the setting and the kind of problem, and URLs the driver or the
database refuses fail with one line too, no traceback."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from tests.server_process import free_port
from timeseries_aggregation.config import ConfigError, database_url, load_config
from timeseries_aggregation.storage.database_url import check_database_url

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

VARIABLE = "TIMESERIES_AGGREGATION_DATABASE_URL"
# Every character that means something in a URL, a non-ASCII one, and fragments that stand out.
USER = "Qh4meter"
PASSWORD = "Zq7/Xv9#Kw3@Jm5%Ty1:Ür8?Lp2[Nb6]Hs0"
SECRET_PARTS = [USER, *re.split(r"[/#@%:?\[\]]", PASSWORD)]


def encoded(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@localhost:5432/db",
        "postgres://localhost/db",
        f"postgresql://{encoded(USER)}:{encoded(PASSWORD)}@db.internal:5432/db",
        "postgresql://u:p@[::1]:5432/db?sslmode=require&application_name=x",
        "postgresql://u:p@h1:5432,h2:5433/db",
        "postgresql://u:pass:with:colons@h/db",
        "postgresql://u:sécret@h/db",
        "postgresql:///db?host=/var/run/postgresql",
    ],
)
def test_urls_asyncpg_reads(url: str) -> None:
    check_database_url(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://{USER}:{PASSWORD}@h:5432/db", "'#', which ends the URL there"),
        ("postgresql://Qh4meter:Zq7/Xv9@h:5432/db", "port that is not a number from 1 to 65535"),
        ("postgresql://Qh4meter:Zq7?Xv9@h:5432/db", "port that is not a number from 1 to 65535"),
        ("postgresql://Qh4meter:Zq7@Xv9@h/db", "more than one '@'"),
        ("postgresql://Qh4meter:Zq7%Xv9@h/db", "'%' that starts no %XX escape"),
        ("postgresql://Qh4meter:Zq7%ffXv9@h/db", "decode to no UTF-8 text"),
        ("postgresql://Qh4meter:Zq7Xv9@h:99999/db", "port that is not a number from 1 to 65535"),
        ("postgresql://Qh4meter:Zq7Xv9@h:port/db", "port that is not a number from 1 to 65535"),
        ("postgresql://Qh4meter:Zq7Xv9@[fd12:3456::9/db", "cannot be read as a URL"),
        ("postgresql://Qh4meter:Zq7Xv9@[fd12:3456::9]x/db", "other than :PORT after an IPv6 host"),
        ("postgresql://Qh4meter:Zq7Xv9@h1,,h2/db", "an empty host"),
        ("postgresql://Qh4meter:Zq7[Xv9@h/db", "cannot be read as a URL"),
        ("Qh4meter:Zq7Xv9@h/db", "must start with postgresql://"),
        ("mysql://Qh4meter:Zq7Xv9@h/db", "must start with postgresql://"),
        ("postgresql://h/db?password", "NAME=VALUE pairs"),
    ],
)
def test_malformed_urls_are_refused_without_a_word_of_them(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        database_url({VARIABLE: url})
    message = str(refused.value)
    assert message.startswith(f"{VARIABLE}: ")
    assert problem in message
    for part in ("Qh4meter", "Zq7", "Xv9", "h1", "mysql", "fd12"):
        assert part not in message
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config({VARIABLE: url, "TIMESERIES_AGGREGATION_AUTH_MODE": "none"})


def with_credentials(url: str, userinfo: str, path: str | None = None, query: str | None = None) -> str:
    """The test database's URL with another user and password (and maybe database or query);
    a userinfo starting with ':' keeps the URL's user and sets the password."""
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    if userinfo.startswith(":"):
        userinfo = user.partition(":")[0] + userinfo
    return urllib.parse.urlunsplit(
        parts._replace(
            netloc=f"{userinfo}@{host}",
            path=parts.path if path is None else path,
            query=parts.query if query is None else query,
        )
    )


def with_host(url: str) -> str:
    """The URL's query up to and with a trailing '&', for a URL that names its host there (a
    Unix socket's directory, as the embedded server's does)."""
    query = urllib.parse.urlsplit(url).query
    return f"{query}&" if query else ""


COMMANDS = {
    "serve": ["serve"],
    "rollups check": ["rollups", "check", "--all"],
}


async def run(command: list[str], url: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        VARIABLE: url,
        "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
        "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
        "TIMESERIES_AGGREGATION_STARTUP_TIMEOUT_SECONDS": "1",
        "TIMESERIES_AGGREGATION_CONNECT_TIMEOUT_SECONDS": "1",
        "TIMESERIES_AGGREGATION_LOG_FORMAT": "text",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "timeseries_aggregation", *command],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


RAW = f"{USER}:{PASSWORD}"
ENCODED = f"{encoded(USER)}:{encoded(PASSWORD)}"


@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(lambda url: with_credentials(url, RAW), id="unencoded"),
        pytest.param(lambda url: with_credentials(url, RAW.replace("#", "")), id="unencoded-without-hash"),
        pytest.param(lambda url: with_credentials(url, ENCODED.replace("%2F", "/")), id="slash"),
        pytest.param(lambda url: with_credentials(url, ENCODED.replace("%40", "@")), id="at-sign"),
        pytest.param(lambda url: with_credentials(url, ENCODED.replace("%25", "%")), id="percent"),
        pytest.param(
            lambda url: with_credentials(url, f":{encoded(PASSWORD)}", path="/no_such_db"), id="database"
        ),
        pytest.param(
            lambda url: with_credentials(url, ENCODED, query=f"{with_host(url)}sslmode=sometimes"),
            id="sslmode",
        ),
        pytest.param(
            lambda url: with_credentials(
                url, f":{encoded(PASSWORD)}", query=f"{with_host(url)}no_such_setting=1"
            ),
            id="setting",
        ),
        pytest.param(lambda _: f"postgresql://{ENCODED}@127.0.0.1:{free_port()}/db", id="nothing-listening"),
        pytest.param(lambda _: f"postgresql://{ENCODED}@[::1:5432/db", id="ipv6-bracket"),
        pytest.param(lambda _: f"postgresql://{ENCODED}@127.0.0.1:65536/db", id="port"),
    ],
)
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_no_part_of_the_url_reaches_stderr(command: str, make_url: object, database_url: str) -> None:
    assert callable(make_url)
    url: str = make_url(database_url)
    result = await run(COMMANDS[command], url)
    assert result.returncode != 0, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "database" in result.stderr.lower(), result.stderr
    for part in [*SECRET_PARTS, encoded(PASSWORD)]:
        assert part not in output, f"{part!r} in {output}"
