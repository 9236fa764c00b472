"""What the image is built from: a base image pinned by digest, every package of the server
install pinned with hashes in requirements/server.lock (and the lock in step with pyproject.toml),
and a HEALTHCHECK that works whether or not the server speaks TLS."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# Static files only: CI runs it on the embedded server, not again on every engine.
pytestmark = pytest.mark.any_engine

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "server.lock"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# `name==version \` followed by `--hash=sha256:...` lines, as pip-compile --generate-hashes writes.
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)", re.MULTILINE)


def locked() -> dict[str, tuple[Version, int]]:
    """Each locked package's version and how many file hashes the lock holds for it."""
    text = LOCK.read_text()
    entries: dict[str, tuple[Version, int]] = {}
    starts = list(PIN.finditer(text))
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        block = text[match.end() : following.start() if following else len(text)]
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block.split("\n    # via")[0]))
        entries[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes)
    return entries


def server_requirements() -> list[Requirement]:
    """What `pip install '.[server]'` asks for, and the build backend that makes the wheel."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    texts = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["server"],
        *pyproject["build-system"]["requires"],
    ]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize("requirement", server_requirements(), ids=str)
def test_the_lock_pins_every_server_dependency_at_a_version_pyproject_allows(
    requirement: Requirement,
) -> None:
    entries = locked()
    name = canonicalize_name(requirement.name)
    assert name in entries, f"{name} is missing from {LOCK.name}: run `make lock`"
    version, _ = entries[name]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{LOCK.name} pins {name}=={version}, outside {requirement.specifier}: run `make lock`"
    )


def test_every_locked_package_has_hashes() -> None:
    entries = locked()
    assert len(entries) >= len(server_requirements())
    assert [name for name, (_, hashes) in entries.items() if hashes == 0] == []


def test_the_base_image_is_pinned_by_digest() -> None:
    [default] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", default)
    # Every stage starts from it.
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_image_installs_the_lock_with_hashes_and_nothing_else_from_the_index() -> None:
    installs = [line for line in DOCKERFILE.splitlines() if "pip install" in line]
    assert installs == [
        "    /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/server.lock",
        "RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-cache-dir .",
    ]
    assert "COPY requirements/server.lock requirements/" in DOCKERFILE


def test_the_healthcheck_runs_the_health_command() -> None:
    # tests/test_health_command.py runs it over plaintext, TLS and mutual TLS.
    healthcheck = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK") :].split("\n# ")[0]
    assert 'CMD ["timeseries-aggregation", "health", "--timeout", "3"]' in healthcheck
    assert "insecure_channel" not in DOCKERFILE
