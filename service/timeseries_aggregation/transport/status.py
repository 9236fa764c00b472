"""The one place where domain errors become gRPC status codes."""

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from timeseries_aggregation.errors import (
    ConcurrencyConflictError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    KeysUnavailableError,
    LimitReachedError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SchemaContractError,
    SeriesNotFoundError,
    StreamIdleError,
    UnauthenticatedError,
)
from timeseries_aggregation.transport.wire import MalformedMessage
from timeseries_aggregation.wording import clipped

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])

_STATUS_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (DatabaseUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (SchemaContractError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConcurrencyConflictError, grpc.StatusCode.ABORTED),
    # Before its base class, UnauthenticatedError.
    (KeysUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamIdleError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


# Bounds on what a status carries, in characters. Every message the service words quotes at most
# a bounded prefix of the caller's input (wording.quoted), so they cut nothing of ours: they are
# the second line of defence for a message that forgot to. A status's message travels twice, in
# the grpc-message header and again inside the google.rpc.Status details, and gRPC clients accept
# 8 KiB of such metadata by default: a 256-character field and a 1,024-character description make
# at most about 5 KB of ASCII on the wire.
FIELD_MAX_CHARACTERS = 256
MESSAGE_MAX_CHARACTERS = 1_024


def bad_request_status(error: InvalidArgumentError) -> status_pb2.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming the field, both bounded in size."""
    field = clipped(error.field, FIELD_MAX_CHARACTERS)
    description = clipped(error.description, MESSAGE_MAX_CHARACTERS)
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    message = f"{field}: {description}"
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])


async def abort_invalid_argument(context: Context, error: InvalidArgumentError) -> NoReturn:
    """Abort with INVALID_ARGUMENT and a google.rpc.BadRequest naming the field."""
    status = rpc_status.to_status(bad_request_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort() returned")  # pragma: no cover


# The resource type a google.rpc.ResourceInfo names for a series (AIP-123's form).
SERIES_RESOURCE_TYPE = "timeseries.v1.Series"


async def abort_series_not_found(context: Context, error: SeriesNotFoundError) -> NoReturn:
    """Abort with NOT_FOUND and a google.rpc.ResourceInfo for each series the message names."""
    details = []
    for series_id in error.named_ids:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.ResourceInfo(
                resource_type=SERIES_RESOURCE_TYPE,
                resource_name=series_id,
                description=f"named in {error.field}; not in the catalog",
            )
        )
        details.append(detail)
    status = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.NOT_FOUND, message=str(error), details=details)
    )
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort() returned")  # pragma: no cover


def limit_reached_status(error: LimitReachedError) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED with a google.rpc.QuotaFailure naming the limit and whom it binds, and
    a google.rpc.RetryInfo saying when to try again."""
    retry_delay = duration_pb2.Duration()
    retry_delay.FromNanoseconds(max(1_000_000, int(error.retry_after_seconds * 1e9)))
    retry = any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=retry_delay))
    violation = error_details_pb2.QuotaFailure.Violation(
        subject=clipped(error.subject, FIELD_MAX_CHARACTERS),
        description=clipped(error.description, MESSAGE_MAX_CHARACTERS),
    )
    quota = any_pb2.Any()
    quota.Pack(error_details_pb2.QuotaFailure(violations=[violation]))
    message = clipped(str(error), MESSAGE_MAX_CHARACTERS)
    return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[quota, retry])


async def abort_for(context: Context, error: Exception, handler_name: str) -> NoReturn:
    """End the call with the status code that stands for the error."""
    if isinstance(error, LimitReachedError):
        status = rpc_status.to_status(limit_reached_status(error))
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(error, InvalidArgumentError):
        await abort_invalid_argument(context, error)
    if isinstance(error, SeriesNotFoundError):
        await abort_series_not_found(context, error)
    for error_type, code in _STATUS_CODES:
        if isinstance(error, error_type):
            await context.abort(code, clipped(str(error), MESSAGE_MAX_CHARACTERS))
    # Details stay in the log: they may name tables or values the caller must not see.
    logger.error("unexpected error in %s", handler_name, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
    raise AssertionError("context.abort() returned")  # pragma: no cover


def map_errors(handler: Handler) -> Handler:
    """Wrap an RPC handler so domain errors reach the caller as canonical status codes."""

    @functools.wraps(handler)
    async def wrapper(servicer: object, request: object, context: Context) -> Any:
        try:
            if isinstance(request, MalformedMessage):
                raise InvalidArgumentError("request", f"is not a valid {request.type_name} message")
            return await handler(servicer, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_for(context, error, handler.__name__)

    return cast(Handler, wrapper)
