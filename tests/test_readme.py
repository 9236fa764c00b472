"""Every code block of the README runs as written against a real server and prints what it shows.

Blocks fenced as `sh` run in bash, blocks fenced as `python` in this interpreter, in README order,
from the repository's root, against one server process started as `make run` starts it
(`timeseries-aggregation serve`, authentication off) on a port of the test's own: the
README's `localhost:50051` is replaced by that server's address, and the command line finds it
through $TIMESERIES_AGGREGATION_TARGET. A `text` block right after a block (nothing but blank
lines between) is what that block prints on stdout, compared as doctest does (`...` matches
anything, runs of whitespace are equal). A block that cannot run in a test is fenced as
`sh not-run`, and NOT_RUN below says why, about a block that exists.
"""

from __future__ import annotations

import asyncio
import doctest
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.server_process import serve_on
from timeseries_aggregation.client import API_KEY_VARIABLE, TARGET_VARIABLE

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_TARGET = "localhost:50051"
RUN = ("sh", "python")
NOT_RUN_MARK = "not-run"
OUTPUT = ("text", "")
# Why each `sh not-run` block is not run, by the start of its first line.
NOT_RUN = {
    "make run": "serves until stopped (and `make test` would run this suite inside itself); this "
    "test starts the same server itself",
    "docker compose": "needs Docker and image builds, which the test machine has not",
    "timeseries-aggregation rollups": "needs the URL of the database of the server this test starts, "
    "which it does not give out; tests/test_rollups.py runs the same commands",
    "timeseries-aggregation catalog": "needs the URL of the database of the server this test starts, "
    "which it does not give out; tests/test_catalog_repair.py runs the same commands",
    "timeseries-aggregation schema": "changes what the database of the server this test starts "
    "requires of writers; tests/test_writer_contract.py runs the same commands",
    "make bench": "takes minutes and measures the machine it runs on; tests/test_bench.py runs the "
    "same script, small, on every engine",
    "pip install timeseries-aggregation": "installs from the package index; "
    "tests/test_client_install.py installs the same wheel, built from this checkout, into a fresh "
    "virtual environment and uses it",
}
COMPARE = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
BLOCK_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README and the output block that follows it, if any."""

    line: int
    language: str
    marks: tuple[str, ...]
    code: str
    expected_output: str | None = None

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN and NOT_RUN_MARK not in self.marks


def readme_blocks() -> list[Block]:
    """The README's fenced blocks in order, each runnable one with the output block after it."""
    tokens = MarkdownIt("commonmark").parse(README.read_text())
    blocks: list[Block] = []
    for previous, token in zip([None, *tokens], tokens, strict=False):
        if token.type != "fence" or token.map is None:
            continue
        language, *marks = token.info.split() or [""]
        follows_a_block = previous is not None and previous.type == "fence"  # only blank lines between
        last = blocks[-1] if blocks else None
        if language in OUTPUT and follows_a_block and last and last.runs and last.expected_output is None:
            blocks[-1] = replace(last, expected_output=token.content)
        else:
            blocks.append(Block(token.map[0] + 1, language, tuple(marks), token.content))
    return blocks


def skip_reason(block: Block) -> str | None:
    """Why the suite does not run a block that is not runnable; None if it has no reason."""
    if block.language in RUN:
        first_line = block.code.strip().splitlines()[0]
        return next((why for start, why in NOT_RUN.items() if first_line.startswith(start)), None)
    if block.language in OUTPUT:
        return "an output shown for a command that the README does not give as a block"
    return f"a {block.language} listing, not a command"


def block_environment(port: int) -> dict[str, str]:
    """This environment, with the virtual environment's scripts first on PATH (as an activated
    one would), the test server as the command line's target, and no API key."""
    environment = {name: value for name, value in os.environ.items() if name != API_KEY_VARIABLE}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment[TARGET_VARIABLE] = f"127.0.0.1:{port}"
    # What `query --chart` draws depends on the terminal's width; the README shows 80 columns.
    environment["COLUMNS"] = "80"
    return environment


async def run_block(block: Block, port: int, scratch: Path) -> tuple[int, str, str]:
    code = block.code.replace(README_TARGET, f"127.0.0.1:{port}")
    if block.language == "python":
        script = scratch / f"readme_line_{block.line}.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=block_environment(port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so that a timeout ends all it started
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BLOCK_TIMEOUT_SECONDS)
    except TimeoutError:
        # SIGTERM first: a server among them stops its own children (an embedded PostgreSQL).
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        raise AssertionError(f"{block.where}: still running after {BLOCK_TIMEOUT_SECONDS} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_the_readme_has_blocks_to_run_and_outputs_to_check() -> None:
    blocks = readme_blocks()
    runnable = [block for block in blocks if block.runs]
    assert {block.language for block in runnable} == set(RUN)
    assert sum(block.expected_output is not None for block in runnable) >= 10


async def test_readme_blocks_run_as_written_and_print_what_it_shows(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    _, port = await serve_on(database_url, tmp_path / "server.log", cleanup)
    checker = doctest.OutputChecker()
    # Twice: `make run` keeps its data, and a reader who goes through the README again on the
    # same server must see what it shows again.
    for _ in range(2):
        for block in filter(lambda block: block.runs, readme_blocks()):
            exit_code, out, err = await run_block(block, port, tmp_path)
            assert exit_code == 0, f"{block.where}: the {block.language} block exited {exit_code}:\n{err}"
            if block.expected_output is not None:
                assert checker.check_output(block.expected_output, out, COMPARE), (
                    f"{block.where}: the {block.language} block printed\n{out}\n"
                    f"where the README shows\n{block.expected_output}"
                )


@pytest.mark.parametrize(
    "block", [block for block in readme_blocks() if not block.runs], ids=lambda block: block.where
)
def test_blocks_not_run_say_why(block: Block) -> None:
    assert skip_reason(block) is not None, (
        f"{block.where}: a `{block.language} {NOT_RUN_MARK}` block that NOT_RUN in {Path(__file__).name} "
        "gives no reason for; run it, or add why it cannot run"
    )


@pytest.mark.parametrize("start", NOT_RUN)
def test_each_reason_not_to_run_a_block_is_about_a_block_and_names_tests_that_exist(start: str) -> None:
    not_run = [block for block in readme_blocks() if block.language in RUN and not block.runs]
    assert any(block.code.strip().startswith(start) for block in not_run), (
        f"no `sh {NOT_RUN_MARK}` block of the README starts with {start!r} any more: drop its reason"
    )
    named = re.findall(r"tests/\w+\.py", NOT_RUN[start])
    assert [name for name in named if not (ROOT / name).is_file()] == []
