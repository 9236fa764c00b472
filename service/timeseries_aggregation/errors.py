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

    The message names the first few of them (a status's message and details travel in metadata,
    whose size is limited); `series_ids` holds them all, in code point order.
    """

    MESSAGE_MAX_IDS = 10

    def __init__(self, field: str, series_ids: Sequence[str]) -> None:
        self.field = field
        self.series_ids = tuple(series_ids)
        named = ", ".join(repr(series_id) for series_id in self.series_ids[: self.MESSAGE_MAX_IDS])
        more = len(self.series_ids) - self.MESSAGE_MAX_IDS
        if more > 0:
            named += f" and {more} more"
        verb, ids = ("is", "id") if len(self.series_ids) == 1 else ("are", "ids")
        super().__init__(
            f"{field}: series {named} {verb} not in the catalog; "
            f"check the {ids} (ListSeries lists the catalog)"
        )


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or stopped answering in time."""


class ConcurrencyConflictError(RuntimeError):
    """The database ended the transaction to resolve a conflict with another (a deadlock or
    a serialization failure); nothing of it was stored and trying again is safe."""


class UnauthenticatedError(Exception):
    """The call carries no valid credentials."""


class PermissionDeniedError(Exception):
    """The caller is known but may not make this call."""


class ResourceExhaustedError(RuntimeError):
    """A limit of the service is reached; the caller may retry later."""


class StreamIdleError(RuntimeError):
    """A client stream sent nothing for longer than the service waits."""


class StartupError(RuntimeError):
    """The service cannot start; the message says what to check."""
