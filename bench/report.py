"""The benchmark's tables: one engine's figures as they are measured, and every engine side by side.

Each run of bench.py keeps its engine's rows in results/ENGINE.json (scale.py its own in
results/scale.json); RESULTS.md is rebuilt from all of them, so engines measured in separate
runs, one server at a time, still appear in one table.

    .venv/bin/python bench/report.py      # rebuild RESULTS.md from bench/results/*.json

A change is measured in a comparison: a folder of its own, which the side-by-side table and the
engines' sections never read (they take results/*.json, not its subfolders):

    results/comparisons/NAME/
        description.md      first line: the title; the rest, copied as it is: what changed and
                            the commands that measured it
        before/ENGINE.json  a run of bench.py on the code before the change
        after/ENGINE.json   a run on the code after it: same engine, same arguments, right after

Each side is one run with the same `--sections` on the same server, the side's folder its
`--results-folder`, for example:

    make bench BENCH_ARGS="--database-url URL --sections query,portfolio,pages,rollups \\
        --results-folder bench/results/comparisons/NAME/before"    # the code before the change
    make bench BENCH_ARGS="--database-url URL --sections query,portfolio,pages,rollups \\
        --results-folder bench/results/comparisons/NAME/after"     # the code after it

A run kept in a side leaves results/*.json as they are and rebuilds RESULTS.md (the report of the
results folder holding the comparison), which shows per comparison and engine each row before and
after, after/before of their first figures (the p50 of a "p50 / p99") and each side's own ratio.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Each engine's figures; the side-by-side report is written beside this folder, as RESULTS.md.
RESULTS_FOLDER = Path(__file__).resolve().parent / "results"
# The repository's root, which a results folder on the report's command line is shown relative to.
REPOSITORY = RESULTS_FOLDER.parent.parent
# Inside a results folder: one folder per comparison, each with these two sides and description.
COMPARISONS = "comparisons"
SIDES = ("before", "after")
DESCRIPTION = "description.md"
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
    measured_at: str = ""

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


def _shown_value(option: str, value: str) -> str:
    if option == "--database-url":
        return "URL"
    folder = Path(value).resolve()
    return folder.relative_to(REPOSITORY).as_posix() if folder.is_relative_to(REPOSITORY) else "DIR"


def shown_command(program: str, argv: list[str], make_variable: str = "") -> str:
    """The command line as the report shows it: a database URL (which may hold a password,
    and names a server of the machine it ran on) is replaced by a placeholder, and a results
    folder is shown relative to the repository (a placeholder when outside it)."""
    shown = list(argv)
    hidden = ("--database-url", "--results-folder")
    for index, argument in enumerate(shown):
        option, equals, value = argument.partition("=")
        if equals and option in hidden:
            shown[index] = f"{option}={_shown_value(option, value)}"
        elif index > 0 and shown[index - 1] in hidden:
            shown[index] = _shown_value(shown[index - 1], argument)
    if not shown:
        return program
    arguments = " ".join(shown)
    return f'{program} {make_variable}="{arguments}"' if make_variable else f"{program} {arguments}"


def add_results_folder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results-folder",
        type=Path,
        default=RESULTS_FOLDER,
        help=(
            "where the figures are kept, as ENGINE.json; RESULTS.md is rebuilt beside it, or for a "
            f"comparison's side ({COMPARISONS}/NAME/before or after) beside the results folder "
            "holding it; never bench/RESULTS.md from any folder but bench/results"
        ),
    )


def reporting_folder(folder: Path) -> Path | None:
    """The results folder whose RESULTS.md shows the figures kept in `folder`: a comparison's side
    is shown in the report of the results folder holding the comparison, any other folder in its
    own; None for a folder beside bench/results, since bench/RESULTS.md shows bench/results alone."""
    folder = folder.resolve()
    if folder.name in SIDES and folder.parent.parent.name == COMPARISONS:
        return folder.parent.parent.parent
    if folder != RESULTS_FOLDER and folder.parent == RESULTS_FOLDER.parent:
        return None
    return folder


def publish(results: Results, folder: Path) -> None:
    """Print the table, keep the figures and rebuild the report that shows them."""
    print()
    print(results.table())
    kept = write_engine_results(results, folder)
    report_folder = reporting_folder(folder)
    if report_folder is None:
        print(f"kept in {kept}; bench/RESULTS.md left as it is: it shows bench/results alone")
    else:
        print(f"kept in {kept}; report rebuilt in {write_report(report_folder)}")


def write_engine_results(results: Results, folder: Path = RESULTS_FOLDER) -> Path:
    """Keep one engine's figures in `folder`; the path written."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{results.engine}.json"
    results.measured_at = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    path.write_text(json.dumps(asdict(results), indent=2) + "\n")
    return path


def _load(path: Path) -> Results:
    record = json.loads(path.read_text())
    rows = [Row(**row) for row in record.pop("rows")]
    results = Results(**record, rows=rows)
    results.notes = [f"- measured {results.measured_at}", *results.notes]
    return results


def _engines(folder: Path) -> dict[str, Results]:
    """Every engine's figures kept in `folder` (not its subfolders), in the report's order."""
    paths = {path.stem: path for path in folder.glob("*.json") if path.stem != "scale"}
    order = [name for name in ENGINE_ORDER if name in paths] + sorted(
        name for name in paths if name not in ENGINE_ORDER
    )
    return {name: _load(paths[name]) for name in order}


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


def _figure(value: str) -> float | None:
    """The number a value is compared by: its first, which is the p50 of a "p50 / p99"."""
    number = re.search(r"\d[\d,]*(?:\.\d+)?", value)
    return float(number.group().replace(",", "")) if number else None


def _change(before: Row | None, after: Row | None) -> str:
    """After's figure over before's, when both runs have the row and a figure in it."""
    old = _figure(before.value) if before else None
    new = _figure(after.value) if after else None
    return f"{new / old:.2f}" if old and new is not None else ""


def _comparison_table(before: Results, after: Results) -> str:
    """Each row of either run, in before's order (a row only after has goes after its section)."""
    rows_before = {(row.section, row.measurement): row for row in before.rows}
    rows_after = {(row.section, row.measurement): row for row in after.rows}
    keys = list(rows_before)
    for key in rows_after:
        if key not in rows_before:
            same_section = [index for index, (section, _) in enumerate(keys) if section == key[0]]
            keys.insert(same_section[-1] + 1 if same_section else len(keys), key)
    lines = [
        "| section | measurement | before | after | after/before | ratio before | ratio after |",
        "|---|---|---|---|---|---|---|",
    ]
    for section, measurement in keys:
        old, new = rows_before.get((section, measurement)), rows_after.get((section, measurement))
        cells = [
            section,
            measurement,
            old.value if old else "",
            new.value if new else "",
            _change(old, new),
            old.ratio if old else "",
            new.ratio if new else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_line(side: str, results: Results | None) -> str:
    if results is None:
        return f"- {side}: not measured"
    return f"- {side}: measured {results.measured_at} by `{results.command}`"


def _comparison(folder: Path) -> list[str]:
    """The report's section on one comparison: its description, then a table per engine."""
    description = folder / DESCRIPTION
    title, _, body = (description.read_text() if description.exists() else folder.name).partition("\n")
    parts = [f"## {title.lstrip('#').strip()}\n"]
    if body.strip():
        parts.append(body.strip() + "\n")
    parts.append(
        "Each row as `bench/bench.py` measured it before the change and after it; after/before divides "
        "the first figures (the p50 where a value holds p50 / p99); each side's ratio is the row's own, "
        "to the raw database where it has a ceiling. A blank: the row is missing from that run.\n"
    )
    before, after = (_engines(folder / side) for side in SIDES)
    names = [name for name in ENGINE_ORDER if name in before or name in after] + sorted(
        name for name in before.keys() | after.keys() if name not in ENGINE_ORDER
    )
    for name in names:
        old, new = before.get(name), after.get(name)
        label = (new or old or Results()).label
        parts += [
            f"### {label}\n",
            _run_line("before", old) + "\n" + _run_line("after", new) + "\n",
            _comparison_table(old or Results(), new or Results()) + "\n",
        ]
    return parts


def write_report(folder: Path = RESULTS_FOLDER) -> Path:
    """RESULTS.md beside `folder`, from every engine's figures in it and its comparisons; its path."""
    engines = _engines(folder)
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
    comparisons = folder / COMPARISONS
    if comparisons.is_dir():
        for comparison in sorted(path for path in comparisons.iterdir() if path.is_dir()):
            parts += _comparison(comparison)
    if (folder / "scale.json").exists():
        scale = _load(folder / "scale.json")
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
