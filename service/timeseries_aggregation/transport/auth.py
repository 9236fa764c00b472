"""Who is calling: the `authorization: Bearer KEY` metadata checked against the key file."""

import logging
from pathlib import Path

from timeseries_aggregation.domain.api_keys import KeyFileError, Keyring, Scope, parse_key_file
from timeseries_aggregation.errors import PermissionDeniedError, UnauthenticatedError
from timeseries_aggregation.transport.status import Context

logger = logging.getLogger(__name__)

ANONYMOUS = ""


def read_keyring(path: Path) -> Keyring:
    """The keys in a key file; raises KeyFileError (naming the line, never a secret) or OSError."""
    return Keyring(parse_key_file(path.read_text(encoding="utf-8")))


class Authenticator:
    """Decides, before any database work, whether a call may proceed and on whose behalf."""

    def __init__(self, keys_file: Path | None) -> None:
        """keys_file None turns authentication off: every call is anonymous and allowed."""
        self._keys_file = keys_file
        self._keyring = read_keyring(keys_file) if keys_file is not None else None

    def reload(self) -> None:
        """Re-read the key file (on SIGHUP); a broken file leaves the keys in force unchanged."""
        if self._keys_file is None:
            return
        try:
            self._keyring = read_keyring(self._keys_file)
        except (OSError, KeyFileError, UnicodeDecodeError) as error:
            logger.error(
                "API keys not reloaded, keeping %d keys in force: %s", len(self._keyring or ()), error
            )
            return
        logger.info("API keys reloaded: %d keys", len(self._keyring))

    def authorize(self, context: Context, scope: Scope) -> str:
        """The caller's key name, or raise Unauthenticated/PermissionDeniedError."""
        if self._keyring is None:
            return ANONYMOUS
        presented = None
        for name, value in context.invocation_metadata() or ():
            if name == "authorization":
                presented = value if isinstance(value, str) else value.decode(errors="replace")
        if not presented:
            raise UnauthenticatedError("send the metadata 'authorization: Bearer <API key>'")
        scheme, _, token = presented.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization metadata must be 'Bearer <API key>'")
        api_key = self._keyring.find(token.strip())
        if api_key is None:
            raise UnauthenticatedError("the API key is not valid")
        if scope not in api_key.scopes:
            raise PermissionDeniedError(
                f"the API key {api_key.name!r} does not have the {scope.value!r} scope"
            )
        return api_key.name
