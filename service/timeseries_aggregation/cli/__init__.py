"""The timeseries-aggregation command: run the server, or call it as a client."""

import contextlib
import os
import sys
from collections.abc import Sequence

import grpc

from timeseries_aggregation.cli.arguments import build_parser
from timeseries_aggregation.cli.calls import call_failed
from timeseries_aggregation.cli.exit_codes import (
    EXIT_BAD_FILE,
    EXIT_BROKEN_PIPE,
    EXIT_CALL_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)
from timeseries_aggregation.client.trace_context import environment_trace_context
from timeseries_aggregation.readers import ReadingFileError

# The command, and the exit codes a caller (a script, a test) tells its outcomes by.
__all__ = [
    "EXIT_BAD_FILE",
    "EXIT_BROKEN_PIPE",
    "EXIT_CALL_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

# Commands that run the service or act on its database rather than call it.
_SERVER_COMMANDS = frozenset({"serve", "keys", "rollups", "catalog", "schema", "health"})


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    # The client commands' calls continue a trace the process was started in ($TRACEPARENT).
    server_side = arguments.command in _SERVER_COMMANDS
    traced = contextlib.nullcontext() if server_side else environment_trace_context()
    try:
        with traced:
            exit_code: int = arguments.run(arguments)
    except grpc.RpcError as error:
        print(call_failed(arguments, error), file=sys.stderr)
        # A series that is not there is most often a typo: a script can tell it from a failure.
        return EXIT_NOT_FOUND if error.code() == grpc.StatusCode.NOT_FOUND else EXIT_CALL_FAILED
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ReadingFileError as error:
        print(f"error: {error}; nothing was stored", file=sys.stderr)
        return EXIT_BAD_FILE
    except BrokenPipeError:
        # The reader of the output left (`| head`): stop quietly, as other commands do, and keep
        # the interpreter from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        # Leaving the client's `with` closed the channel, which cancelled the call in flight.
        outcome = {
            "import": "; the stream was cancelled, so nothing was stored",
            "delete": "; a deletion happens whole or not at all",
        }.get(arguments.command, "")
        print(f"error: {arguments.command} interrupted{outcome}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return exit_code
