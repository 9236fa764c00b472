"""The benchmark's tables: one engine's figures as they are measured, and every engine side by side.

Each run of bench.py keeps its engine's rows in results/ENGINE.json (scale.py its own in
results/scale.json); RESULTS.md is rebuilt from all of them, so engines measured in separate
runs, one server at a time, still appear in one table.

    .venv/bin/python bench/report.py      # rebuild RESULTS.md from bench/results/*.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Each engine's figures; the side-by-side report is written beside this folder, as RESULTS.md.
RESULTS_FOLDER = Path(__file__).resolve().parent / "results"
# The engines in the order the side-by-side table shows them.
ENGINE_ORDER = ("postgresql", "timescaledb", "timescaledb-compressed", "citus")


@dataclass
class Row:
    """One line of a results table; `summary` names the rows that also go side by side."""

    section: str
    measurement: str
    value: str
    ceiling: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""
    summary: str = ""


@dataclass
class Results:
    engine: str = ""
    label: str = ""
    command: str = ""
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        cells = [row.section, row.measurement, row.value, row.ceiling, row.ratio, row.target, row.met]
        print("  " + " | ".join(cell for cell in cells if cell), flush=True)

    def table(self) -> str:
        header = "| section | measurement | value | ceiling (raw database) | ratio | target | met |"
        lines = [header, "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            cells = [row.section, row.measurement, row.value, row.ceiling, row.ratio, row.target, row.met]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def shown_command(program: str, argv: list[str], make_variable: str = "") -> str:
    """The command line as the report shows it: a database URL (which may hold a password,
    and names a server of the machine it ran on) is replaced by a placeholder."""
    shown = list(argv)
    for index, argument in enumerate(shown):
        if argument.startswith("--database-url="):
            shown[index] = "--database-url=URL"
        elif index > 0 and shown[index - 1] == "--database-url":
            shown[index] = "URL"
    if not shown:
        return program
    arguments = " ".join(shown)
    return f'{program} {make_variable}="{arguments}"' if make_variable else f"{program} {arguments}"


def add_results_folder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results-folder",
        type=Path,
        default=RESULTS_FOLDER,
        help="where the figures are kept, as ENGINE.json; RESULTS.md is written beside it",
    )


def publish(results: Results, folder: Path) -> None:
    """Print the table, keep the figures and rebuild the report."""
    print()
    print(results.table())
    print(f"kept in {write_engine_results(results, folder)}; every engine side by side in RESULTS.md")


def write_engine_results(results: Results, folder: Path = RESULTS_FOLDER) -> Path:
    """Keep one engine's figures in `folder` and rebuild the report beside it; the path written."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{results.engine}.json"
    record = asdict(results) | {"measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}
    path.write_text(json.dumps(record, indent=2) + "\n")
    write_report(folder)
    return path


def _load(path: Path) -> Results:
    record = json.loads(path.read_text())
    rows = [Row(**row) for row in record.pop("rows")]
    measured_at = record.pop("measured_at")
    results = Results(**record, rows=rows)
    results.notes = [f"- measured {measured_at}", *results.notes]
    return results


def _side_by_side(engines: list[Results]) -> str:
    """The summary rows of every engine, one column per engine."""
    keys: list[str] = []
    for results in engines:
        keys += [row.summary for row in results.rows if row.summary and row.summary not in keys]
    lines = [
        "| measurement | " + " | ".join(results.label for results in engines) + " |",
        "|---|" + "---|" * len(engines),
    ]
    for key in keys:
        cells = []
        for results in engines:
            row = next((row for row in results.rows if row.summary == key), None)
            if row is None:
                cells.append("")
                continue
            ratio = f" ({row.ratio}x)" if row.ratio else ""
            cells.append(f"{row.value}{ratio}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _storage_verdict(engines: dict[str, Results]) -> str:
    """Compressed TimescaleDB's bytes per reading against plain PostgreSQL's, both measured."""

    def bytes_per_reading(results: Results | None) -> float | None:
        row = (
            next((row for row in results.rows if row.summary == "storage, bytes per reading"), None)
            if results
            else None
        )
        return float(row.value.split()[0]) if row else None

    plain = bytes_per_reading(engines.get("postgresql"))
    compressed = bytes_per_reading(engines.get("timescaledb-compressed"))
    if plain is None or compressed is None:
        return ""
    share = compressed / plain
    verdict = "met" if share <= 0.2 else "NOT met"
    return (
        f"Compressed TimescaleDB stores a quarter-hourly reading in {compressed:.1f} bytes against "
        f"{plain:.1f} on plain PostgreSQL: {share:.2f} of it (target at most 0.20: {verdict}).\n\n"
    )


def write_report(folder: Path = RESULTS_FOLDER) -> Path:
    """RESULTS.md beside `folder`, from every engine's figures in it; its path."""
    paths = {path.stem: path for path in folder.glob("*.json")}
    order = [name for name in ENGINE_ORDER if name in paths] + sorted(
        name for name in paths if name not in ENGINE_ORDER and name != "scale"
    )
    engines = {name: _load(paths[name]) for name in order}
    parts = [
        "# Benchmark results\n",
        "Built by `bench/report.py` from `bench/results/*.json`; each engine's figures come from one "
        "run of `make bench` on it, every ratio from figures of the same run.\n",
    ]
    if engines:
        parts += [
            "## Side by side\n",
            "Each cell: the service's figure and, in brackets, its ratio to the raw database doing the "
            "same work on the same engine (raw `COPY` for ingest, the same aggregate in plain SQL for "
            "queries).\n",
            _side_by_side(list(engines.values())) + "\n",
            _storage_verdict(engines),
        ]
    if "scale" in paths:
        scale = _load(paths["scale"])
        parts += [f"## {scale.label}\n", f"Produced by `{scale.command}`.\n", "\n".join(scale.notes) + "\n"]
        parts.append(scale.table() + "\n")
    for results in engines.values():
        parts += [
            f"## {results.label}\n",
            f"Produced by `{results.command}`.\n",
            "\n".join(results.notes) + "\n",
            results.table() + "\n",
        ]
    report = folder.parent / "RESULTS.md"
    report.write_text("\n".join(parts))
    return report


if __name__ == "__main__":
    write_report()
