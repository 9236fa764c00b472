"""Installs of the project as its users make them, in virtual environments of their own: the
client (`pip install timeseries-aggregation`) and the server (`...[server]`), from a wheel
built from this checkout. Used by the client-install test and by bench/client_install.py."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
# What a wheel is built from: the rest of the checkout (tests, bench, virtual environments) is
# left out, and nothing is written into the checkout itself.
_SOURCES = ("pyproject.toml", "README.md", "service", "generated")
_NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
PIP_TIMEOUT_SECONDS = 600


def build_wheel(into: Path) -> Path:
    """The project's wheel, built from a copy of its sources."""
    source = into / "source"
    source.mkdir(parents=True)
    for name in _SOURCES:
        path = PROJECT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=_NOT_SOURCES)
        else:
            shutil.copy2(path, source / name)
    wheels = into / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)])
    [wheel] = wheels.glob("timeseries_aggregation-*.whl")
    return wheel


def install(wheel: Path, environment: Path, extra: str | None = None) -> Path:
    """A fresh virtual environment holding the wheel (with `extra`) and its dependencies; the
    path of its Python."""
    venv.EnvBuilder(with_pip=True, clear=True).create(environment)
    python = environment / "bin" / "python"
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement])
    return python


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
    if completed.returncode != 0:
        output = completed.stdout[-2000:] + completed.stderr[-4000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{output}")
