"""Errors shared by the domain, storage and transport layers."""

from collections.abc import Sequence


class InvalidArgumentError(ValueError):
    """A request field has a value the service cannot accept."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class SeriesNotFoundError(LookupError):
    """Series named by id (in `field`) are not in the catalog.

    `series_ids` holds them all, in code point order; the message names the first few of them,
    `named_ids`: a status's message and details travel in metadata, which clients cap at a few
    kilobytes (8 KiB in gRPC's default), so they are bounded in number and in UTF-8 bytes.
    """

    MESSAGE_MAX_IDS = 10
    MESSAGE_MAX_BYTES = 1_024

    def __init__(self, field: str, series_ids: Sequence[str]) -> None:
        self.field = field
        self.series_ids = tuple(series_ids)
        named: list[str] = []
        size = 0
        for series_id in self.series_ids[: self.MESSAGE_MAX_IDS]:
            size += len(series_id.encode())
            if named and size > self.MESSAGE_MAX_BYTES:
                break
            named.append(series_id)
        self.named_ids = tuple(named)
        text = ", ".join(repr(series_id) for series_id in self.named_ids)
        more = len(self.series_ids) - len(self.named_ids)
        if more > 0:
            text += f" and {more} more"
        verb, ids = ("is", "id") if len(self.series_ids) == 1 else ("are", "ids")
        super().__init__(
            f"{field}: series {text} {verb} not in the catalog; "
            f"check the {ids} (ListSeries lists the catalog)"
        )


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or stopped answering in time."""


class ConcurrencyConflictError(RuntimeError):
    """The database ended the transaction to resolve a conflict with another (a deadlock or
    a serialization failure); nothing of it was stored and trying again is safe."""


class SchemaContractError(RuntimeError):
    """The database requires a newer schema contract of writers than this server keeps: its
    schema moved past this build (storage/writer_contract.py). Nothing was written."""


class UnauthenticatedError(Exception):
    """The call carries no valid credentials."""


class KeysUnavailableError(UnauthenticatedError):
    """No key can be checked: the key file did not reload. A kind of UnauthenticatedError, so
    that whatever refuses unauthenticated calls refuses these too, but the server's fault:
    UNAVAILABLE, not UNAUTHENTICATED."""


class PermissionDeniedError(Exception):
    """The caller is known but may not make this call."""


class ResourceExhaustedError(RuntimeError):
    """A limit of the service is reached; the caller may retry later."""


class LimitReachedError(ResourceExhaustedError):
    """A call is refused by admission control or by its key's share: `limit` says which (and its
    value), `subject` whom it applies to (a key's name, or the server), and trying again after
    `retry_after_seconds` may succeed."""

    def __init__(self, limit: str, subject: str, description: str, retry_after_seconds: float) -> None:
        super().__init__(f"{description}; retry in {retry_after_seconds:.3g} s")
        self.limit = limit
        self.subject = subject
        self.description = description
        self.retry_after_seconds = retry_after_seconds


class StreamIdleError(RuntimeError):
    """A client stream sent nothing for longer than the service waits."""


class StartupError(RuntimeError):
    """The service cannot start; the message says what to check."""
