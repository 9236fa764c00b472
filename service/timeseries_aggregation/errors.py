"""Errors shared by the domain, storage and transport layers."""


class InvalidArgumentError(ValueError):
    """A request field has a value the service cannot accept."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


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
