"""What a caller installs and loads: the client (`pip install timeseries-aggregation`) against
the full install (`timeseries-aggregation[server]`), each in a fresh virtual environment built
from this checkout's wheel: installed size, import time of the client library, start-up time
of the CLI, and how fast the client encodes columnar readings with and without numpy.

    .venv/bin/python bench/client_install.py [--imports 15]
"""

import argparse
import statistics
import subprocess
import tempfile
import time
import venv
from pathlib import Path

from installs import build_wheel, install

IMPORT_CLIENT = "import timeseries_aggregation.client"
IMPORT_SERVER = "import timeseries_aggregation.app"
# Encodes a million readings of one series into 20,000-reading messages, from Python lists
# (the CLI's import and most callers) and, where numpy is installed, also through numpy
# arrays (the client's way before numpy left its dependencies: np.asarray, then tolist()).
ENCODE = """
import sys, time
from timeseries_aggregation.client import series_messages
count = 1_000_000
times = list(range(1_735_689_600_000_000, 1_735_689_600_000_000 + count * 60_000_000, 60_000_000))
quantities = [0.25] * count
def rate(make):
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for message in make():
            message.SerializeToString()
        best = max(best, count / (time.perf_counter() - started))
    return best
print(f"lists {rate(lambda: series_messages('m', times, quantities, 20_000)):.0f}")
try:
    import numpy as np
except ImportError:
    sys.exit()
def through_numpy():
    array_times = np.asarray(times, dtype=np.int64)
    array_quantities = np.asarray(quantities, dtype=np.float64)
    return series_messages("m", array_times, array_quantities, 20_000)
print(f"numpy {rate(through_numpy):.0f}")
"""


def site_packages_bytes(environment: Path) -> int:
    [site_packages] = (environment / "lib").glob("python3*/site-packages")
    return sum(path.stat().st_size for path in site_packages.rglob("*") if path.is_file())


def median_seconds(command: list[str], runs: int) -> float:
    """The median wall-clock time of a fresh process running `command`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--imports", type=int, default=15, help="fresh interpreters per import timing")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        wheel = build_wheel(root / "build")
        bare = root / "bare"
        venv.EnvBuilder(with_pip=True).create(bare)
        installs = {
            "client": install(wheel, root / "client"),
            "client + server": install(wheel, root / "server", extra="server"),
        }
        baseline = site_packages_bytes(bare)
        bare_python = str(bare / "bin" / "python")
        interpreter = median_seconds([bare_python, "-c", "pass"], arguments.imports)
        print(
            f"{arguments.imports} fresh interpreters per timing (import times exclude the "
            f"{interpreter * 1000:.0f} ms a bare interpreter takes to start and stop)"
        )
        print(f"a bare virtual environment (pip alone) holds {mib(baseline)}\n")
        columns = ("installed", "import client", "CLI --help", "import server")
        print(
            f"{'install':<16} "
            + " ".join(f"{column:>{width}}" for column, width in zip(columns, (10, 14, 11, 14), strict=True))
        )
        encodings = {}
        for name, python in installs.items():
            size = site_packages_bytes(python.parent.parent) - baseline
            client = median_seconds([str(python), "-c", IMPORT_CLIENT], arguments.imports) - interpreter
            cli = python.parent / "timeseries-aggregation"
            help_seconds = median_seconds([str(cli), "--help"], arguments.imports)
            server = "not installed"
            if name != "client":
                server_seconds = median_seconds([str(python), "-c", IMPORT_SERVER], arguments.imports)
                server = f"{(server_seconds - interpreter) * 1000:.0f} ms"
            figures = f"{mib(size):>10} {client * 1000:>11.0f} ms {help_seconds * 1000:>8.0f} ms {server:>14}"
            print(f"{name:<16} {figures}")
            encoded = subprocess.run([str(python), "-c", ENCODE], check=True, capture_output=True, text=True)
            encodings[name] = encoded.stdout.split()
        print("\ncolumnar readings encoded into messages, readings/s (best of 3, a million readings):")
        for name, figures in encodings.items():
            pairs = dict(zip(figures[::2], figures[1::2], strict=True))
            shown = ", ".join(f"from {kind} {float(rate):,.0f}" for kind, rate in pairs.items())
            print(f"  {name}: {shown}")


if __name__ == "__main__":
    main()
