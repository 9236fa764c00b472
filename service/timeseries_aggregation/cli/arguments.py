"""The command line: the parser, its subcommands and the types that check their arguments."""

import argparse
import math
import os
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from timeseries_aggregation.cli.calls import API_KEY_FILE_VARIABLE, INSECURE_TRUSTED_NETWORK_VARIABLE
from timeseries_aggregation.cli.client_commands import (
    delete_command,
    history_command,
    list_series_command,
    query_command,
    update_series_command,
)
from timeseries_aggregation.cli.exit_codes import EXIT_USAGE
from timeseries_aggregation.cli.health_command import health_command
from timeseries_aggregation.cli.importing import import_command
from timeseries_aggregation.cli.server_commands import (
    catalog_command,
    generate_key_command,
    rollups_command,
    schema_command,
    serve_command,
)
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    DEFAULT_INGEST_TIMEOUT_SECONDS,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_SECONDS,
    TARGET_VARIABLE,
)
from timeseries_aggregation.domain.durations import format_duration, parse_duration
from timeseries_aggregation.domain.readings import check_series_id
from timeseries_aggregation.domain.time_zones import check_time_zone
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import GRANULARITIES
from timeseries_aggregation.limits import (
    BUCKETS_MAX_PAGE_SIZE,
    MAX_READINGS_PER_MESSAGE,
    READING_INTERVAL_MAX_SECONDS,
    READING_INTERVAL_MIN_SECONDS,
    SELECTOR_MAX_SERIES_IDS,
    SERIES_MAX_PAGE_SIZE,
)
from timeseries_aggregation.readers import (
    QUANTITY_COLUMN,
    SERIES_COLUMN,
    TIME_COLUMN,
)

EXAMPLES = """examples:
  timeseries-aggregation serve
  timeseries-aggregation keys generate --name billing-loader --scopes ingest
  timeseries-aggregation rollups check --all
  timeseries-aggregation catalog check --all
  timeseries-aggregation import readings.xlsx --series-id meter-1
  timeseries-aggregation import meters.csv --columns 'Meter,Time (UTC),Quantity kWh'
  timeseries-aggregation query --series-id meter-1 --granularity daily --from 2025-10-01 --to 2025-10-04
  timeseries-aggregation query --series-id meter-1 --granularity monthly --format csv > months.csv
  timeseries-aggregation query --series-id meter-1 --granularity daily --from 2025-10-01 --chart
  timeseries-aggregation query --label site=berlin-01 --group-by customer --granularity daily --coverage
  timeseries-aggregation history --limit 20 --format json
  timeseries-aggregation update-series meter-1 --label site=berlin-01 --reading-interval 15m
  timeseries-aggregation series --label site=berlin-01
  timeseries-aggregation delete --label site=berlin-01 --from 2025-10-01 --to 2025-10-03 --yes

exit codes: 0 done, 1 the service refused or failed the call (or a deletion was not confirmed),
2 usage or configuration error, 3 the input file cannot be read, 4 a --series-id is not in the
catalog (NOT_FOUND), 130 interrupted (Ctrl-C), 141 output closed early.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error of the command, and
    options taken as typed: `--form` is no `--format`, nor `--series` a `--series-id`.
    Subcommands' parsers are of this class too (argparse makes them of their parent's)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


class _RefusedApiKey(argparse.Action):
    """--api-key, refused with the ways that keep the key out of process listings; the value
    is never repeated."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"--api-key is not accepted: a key on the command line shows in process listings; "
            f"set ${API_KEY_VARIABLE} or pass --api-key-file PATH"
        )


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high:,}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _day_or_time(text: str) -> date | datetime:
    """A date (YYYY-MM-DD), which stands for the whole local day, or a date-time."""
    try:
        return _day(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date as YYYY-MM-DD or a date-time as YYYY-MM-DDTHH:MM[:SS][+HH:MM], got {text!r}"
        ) from None


def _time_zone(text: str) -> str:
    # The service's own rule, so that a name it refuses is a usage error here, in its words.
    try:
        return check_time_zone(text, "--time-zone")
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(error.description) from None


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _add_shown(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--show",
        type=_positive_count,
        default=20,
        metavar="N",
        help="print the first N differences (default 20), then how many there are",
    )


def _series_id(text: str, allow_blank: bool = True) -> str:
    # The service's own rule, checked here too so that a typo costs no call. A series is looked
    # up by a blank id (one stored before they were refused), never given one.
    try:
        check_series_id(text, "--series-id", allow_blank)
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(error.description) from None
    return text


def _new_series_id(text: str) -> str:
    return _series_id(text, allow_blank=False)


def _label(text: str) -> tuple[str, str]:
    # Split at the first '=': a value may hold more of them. The service checks keys and values.
    key, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _reading_interval(text: str) -> timedelta:
    shortest = timedelta(seconds=READING_INTERVAL_MIN_SECONDS)
    longest = timedelta(seconds=READING_INTERVAL_MAX_SECONDS)
    try:
        interval = parse_duration(text)
    except ValueError:
        interval = None
    if interval is None or not shortest <= interval <= longest:
        raise argparse.ArgumentTypeError(
            f"must be {format_duration(shortest)} to {format_duration(longest)}: a whole number and "
            f"s, m, h or d, such as 900s, 15m or 1h; got {text!r}"
        )
    return interval


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _add_selector_options(
    command: argparse.ArgumentParser, series_help: str, label_help: str = "only series with this label"
) -> None:
    """--series-id and --label: the repeatable options that make a SeriesSelector."""
    command.add_argument(
        "--series-id",
        dest="series_ids",
        metavar="ID",
        type=_series_id,
        action="append",
        help=f"{series_help} (up to {SELECTOR_MAX_SERIES_IDS:,})",
    )
    command.add_argument(
        "--label",
        dest="labels",
        metavar="KEY=VALUE",
        type=_label,
        action="append",
        help=f"{label_help}; repeat for more, all must match",
    )


def _add_series_choice(command: argparse.ArgumentParser, series_help: str, all_help: str) -> None:
    """--series-id (repeated) or --all, one of them required: the series a maintenance command
    works on."""
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("--series-id", dest="series_ids", action="append", type=_series_id, help=series_help)
    which.add_argument("--all", action="store_true", help=all_help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="timeseries-aggregation",
        description="Power-consumption readings in, aggregates out, over gRPC.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (configured by the environment)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, one per core to use "
        "(default: $TIMESERIES_AGGREGATION_WORKERS, else 1)",
    )
    serve.set_defaults(run=serve_command)

    health = commands.add_parser(
        "health",
        help="exit 0 when the server this environment configures is SERVING (over TLS when it "
        "speaks TLS); what the container's HEALTHCHECK runs",
    )
    health.add_argument("--timeout", type=_seconds, default=3.0, help="seconds to wait (default 3)")
    health.set_defaults(run=health_command)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_commands.add_parser("generate", help="print a new API key and its key-file line")
    generate.add_argument("--name", required=True, help="who the key is for; recorded in the history")
    generate.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: ingest (send readings), query (aggregates, series and the key's own "
        "history), catalog (update-series: labels and intervals), history-all (every key's history), "
        "delete (remove readings)",
    )
    generate.set_defaults(run=generate_key_command)

    rollups = commands.add_parser(
        "rollups",
        help="rebuild or check the rollups of series, in the service's database "
        "($TIMESERIES_AGGREGATION_DATABASE_URL)",
    )
    rollup_commands = rollups.add_subparsers(dest="rollups_command", required=True)
    for name, help_text in (
        ("rebuild", "make rollups again from the readings; a series rebuilt whole becomes rolled up"),
        ("check", "compare rollups with the readings; exit 1 when any differs"),
    ):
        command = rollup_commands.add_parser(name, help=help_text)
        _add_series_choice(
            command,
            "a series; repeat for more (without --from and --to, a series is rebuilt whole "
            "and becomes rolled up)",
            "every rolled-up series, and every series that should be",
        )
        command.add_argument(
            "--from",
            dest="date_from",
            metavar="DATE_OR_TIME",
            type=_day_or_time,
            help="first day or instant, UTC (default: the series' first reading); the hours it "
            "falls in are rebuilt or checked whole",
        )
        command.add_argument(
            "--to",
            dest="date_to",
            metavar="DATE_OR_TIME",
            type=_day_or_time,
            help="last day, or the instant the range ends before, UTC (default: the last reading)",
        )
        if name == "check":
            _add_shown(command)
        command.set_defaults(run=rollups_command)

    catalog = commands.add_parser(
        "catalog",
        help="check or repair the series catalog and the rollups against the readings, in the "
        "service's database ($TIMESERIES_AGGREGATION_DATABASE_URL); safe while the service runs",
    )
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    for name, help_text in (
        (
            "rebuild",
            "make each series' catalog figures (reading count, first and last reading time) and "
            "rollups those of its readings, adding series the catalog lacks",
        ),
        ("check", "compare the catalog and the rollups with the readings; exit 1 when any differs"),
    ):
        command = catalog_commands.add_parser(name, help=help_text)
        _add_series_choice(
            command, "a series; repeat for more", "every series in the catalog or the readings"
        )
        command.add_argument(
            "--batch-size",
            type=_positive_count,
            default=100,
            help="series per transaction (default 100): each series' catalog row stays locked, and "
            "streams of it wait, until its batch is done",
        )
        _add_shown(command)
        command.set_defaults(run=catalog_command)

    schema = commands.add_parser(
        "schema",
        help="show what the database's schema requires of writers, or let older builds write "
        "for a rollback ($TIMESERIES_AGGREGATION_DATABASE_URL)",
    )
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    schema_commands.add_parser(
        "status", help="the newest migration, the schema contract writers must keep, and this build's"
    ).set_defaults(run=schema_command)
    schema_commands.add_parser(
        "allow-older-writers",
        help="let servers of older builds write (a rollback); the next server of this build to "
        "start requires its contract again",
    ).set_defaults(run=schema_command)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name, help=help_text, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        command.add_argument(
            "--target",
            default=os.environ.get(TARGET_VARIABLE) or DEFAULT_TARGET,
            help=f"server HOST:PORT (default: ${TARGET_VARIABLE}, else {DEFAULT_TARGET})",
        )
        command.add_argument(
            "--timeout",
            type=_seconds,
            help=f"seconds before the command gives up: each call's deadline (default "
            f"{DEFAULT_TIMEOUT_SECONDS:g}); for import, the whole stream's "
            f"(default {DEFAULT_INGEST_TIMEOUT_SECONDS:g})",
        )
        # No --api-key: a key on the command line shows in process listings and shell history.
        command.add_argument("--api-key", nargs="?", action=_RefusedApiKey, help=argparse.SUPPRESS)
        command.add_argument(
            "--api-key-file",
            type=Path,
            metavar="PATH",
            help=f"a file holding the API key (default: ${API_KEY_VARIABLE}, else the file "
            f"${API_KEY_FILE_VARIABLE} names)",
        )
        command.add_argument(
            "--tls",
            action="store_true",
            help="use TLS, verifying the server with the system's CAs (implied by --tls-ca)",
        )
        command.add_argument(
            "--tls-ca", type=_readable_file, help="CA certificate to verify the server: use TLS"
        )
        command.add_argument(
            "--insecure-trusted-network",
            action="store_true",
            help="send the API key over plaintext to a server beyond this machine, on a network "
            f"you trust (default: ${INSECURE_TRUSTED_NETWORK_VARIABLE}=1); loopback needs no flag",
        )
        command.add_argument("--tls-cert", type=_readable_file, help="client certificate, for mutual TLS")
        command.add_argument("--tls-key", type=_readable_file, help="client private key, for mutual TLS")
        return command

    ingest = client_command("import", help_text="stream an .xlsx or .csv file of readings")
    ingest.add_argument(
        "file", type=Path, help=f"columns {TIME_COLUMN!r}, {QUANTITY_COLUMN!r} and maybe {SERIES_COLUMN!r}"
    )
    ingest.add_argument(
        "--series-id",
        type=_new_series_id,
        help=f"the meter the readings belong to, for a file without a {SERIES_COLUMN!r} column",
    )
    ingest.add_argument(
        "--series-column",
        metavar="NAME",
        help=f"the column naming each row's meter (default: {SERIES_COLUMN!r}, where the file has it)",
    )
    ingest.add_argument(
        "--columns",
        metavar="NAME,NAME,...",
        help="the columns to read, separated by ','; the file's others are ignored (default: all)",
    )
    ingest.add_argument(
        "--delimiter",
        choices=(",", ";"),
        help="what separates a CSV file's fields (default: ';' if the header is separated by ';', else ',')",
    )
    ingest.add_argument(
        "--decimal",
        choices=(".", ","),
        help="a CSV file's decimal mark (default: ',' where ';' separates the fields, else '.')",
    )
    ingest.add_argument(
        "--batch-size",
        type=_whole_number(1, MAX_READINGS_PER_MESSAGE),
        default=5_000,
        help=f"readings per message, 1 to {MAX_READINGS_PER_MESSAGE:,} (default 5,000)",
    )
    ingest.set_defaults(run=import_command)

    query = client_command("query", help_text="print aggregates of one series, or of the series selected")
    _add_selector_options(
        query,
        series_help="the series; repeat to aggregate several together",
        label_help="aggregate the series with this label",
    )
    query.add_argument(
        "--group-by",
        metavar="KEY",
        action="append",
        help="a label key, or series_id: buckets per group, a column each; repeat for more",
    )
    query.add_argument("--granularity", choices=[info.name for info in GRANULARITIES], required=True)
    query.add_argument("--from", dest="date_from", type=_day, help="first day, inclusive (YYYY-MM-DD)")
    query.add_argument("--to", dest="date_to", type=_day, help="last day, inclusive (YYYY-MM-DD)")
    query.add_argument("--time-zone", type=_time_zone, default="UTC", help="IANA zone for buckets and dates")
    query.add_argument(
        "--page-size",
        type=_whole_number(0, BUCKETS_MAX_PAGE_SIZE),
        default=0,
        help=f"buckets per call, up to {BUCKETS_MAX_PAGE_SIZE:,} (0: the server's default)",
    )
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--chart", action="store_true", help="draw the totals as a bar chart")
    query.add_argument(
        "--include-empty",
        action="store_true",
        help="also the buckets without readings, with zero counts, so a missing day shows",
    )
    query.add_argument(
        "--coverage",
        action="store_true",
        help="add a coverage column: the readings as a share of those the declared reading "
        "intervals expect ('-' where no series declares one)",
    )
    query.set_defaults(run=query_command)

    history = client_command(
        "history", help_text="print the most recent queries of the key (of every key with history-all)"
    )
    history.add_argument("--limit", type=_whole_number(1), default=10, help="how many, newest first")
    history.add_argument("--format", choices=("table", "csv", "json"), default="table")
    history.set_defaults(run=history_command)

    update_series = client_command(
        "update-series",
        help_text="set the labels or the reading interval of a series, creating it (needs the catalog scope)",
    )
    update_series.add_argument(
        "series_id",
        metavar="SERIES_ID",
        type=_new_series_id,
        help="the meter; created if the catalog lacks it",
    )
    labels = update_series.add_mutually_exclusive_group()
    labels.add_argument(
        "--label",
        dest="labels",
        metavar="KEY=VALUE",
        type=_label,
        action="append",
        help="a label; repeat for more. The labels given replace all the series had",
    )
    labels.add_argument("--clear-labels", action="store_true", help="remove every label")
    interval = update_series.add_mutually_exclusive_group()
    interval.add_argument(
        "--reading-interval",
        metavar="DURATION",
        type=_reading_interval,
        help="how often the meter reports: 1s to 1d, such as 900s, 15m or 1h",
    )
    interval.add_argument(
        "--clear-reading-interval", action="store_true", help="remove the declared reading interval"
    )
    update_series.add_argument("--format", choices=("table", "csv", "json"), default="table")
    update_series.set_defaults(run=update_series_command)

    series = client_command("series", help_text="list series with their labels, interval and freshness")
    _add_selector_options(series, series_help="only this series; repeat for more")
    series.add_argument(
        "--page-size",
        type=_whole_number(0, SERIES_MAX_PAGE_SIZE),
        default=0,
        help=f"series per call, up to {SERIES_MAX_PAGE_SIZE:,} "
        "(0: as many as --limit, else the server's default)",
    )
    series.add_argument(
        "--limit", type=_whole_number(1), help="how many at most, in series_id order (default: all)"
    )
    series.add_argument("--format", choices=("table", "csv", "json"), default="table")
    series.set_defaults(run=list_series_command)

    delete = client_command("delete", help_text="delete the readings of the selected series in a time range")
    _add_selector_options(delete, series_help="a series to delete from; repeat for more")
    delete.add_argument(
        "--from",
        dest="date_from",
        metavar="DATE_OR_TIME",
        type=_day_or_time,
        required=True,
        help="first day, inclusive (YYYY-MM-DD), or the first instant (YYYY-MM-DDTHH:MM)",
    )
    delete.add_argument(
        "--to",
        dest="date_to",
        metavar="DATE_OR_TIME",
        type=_day_or_time,
        required=True,
        help="last day, inclusive (YYYY-MM-DD), or the instant the range ends before",
    )
    delete.add_argument(
        "--time-zone",
        type=_time_zone,
        default="UTC",
        help="IANA zone of the dates, and of date-times without an offset",
    )
    delete.add_argument(
        "--yes",
        action="store_true",
        help="delete without listing the series and asking first (needed when stdin is not a terminal)",
    )
    delete.set_defaults(run=delete_command)
    return parser
