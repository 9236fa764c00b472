"""Who is calling and what they may do, decided before a handler runs.

Callers send `authorization: Bearer KEY`; the key file maps keys to names and scopes. The
interceptor checks every call of the service from its metadata before gRPC reads the request
(a refused caller's body is never received), counts the call against the key's rate, writes
the key's name and limits into the call record (for history, the access log and the ingest
stream's share), and leaves health and reflection open.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.api_keys import ApiKey, KeyFileError, Keyring, Scope, parse_key_file
from timeseries_aggregation.errors import (
    KeysUnavailableError,
    LimitReachedError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from timeseries_aggregation.observability.refusals import Reason, Refusals
from timeseries_aggregation.transport.call_record import current_call
from timeseries_aggregation.transport.handlers import Handler, refusing_handler, run_first
from timeseries_aggregation.transport.quotas import KeyQuotas
from timeseries_aggregation.transport.status import abort_for
from timeseries_aggregation.wording import counted

logger = logging.getLogger(__name__)

_SERVICE = pb.DESCRIPTOR.services_by_name["TimeseriesAggregationService"].full_name
# The scope each method needs. A method of the service missing here is refused to every key,
# so a new RPC is closed until someone decides who may call it.
METHOD_SCOPES: dict[str, Scope] = {
    f"/{_SERVICE}/IngestReadings": Scope.INGEST,
    f"/{_SERVICE}/QueryAggregates": Scope.QUERY,
    f"/{_SERVICE}/ListQueryHistory": Scope.QUERY,
    # Setting labels creates series and reveals a series' labels and counts: not an ingest power.
    f"/{_SERVICE}/UpdateSeries": Scope.CATALOG,
    f"/{_SERVICE}/ListSeries": Scope.QUERY,
    # Removing readings is its own power: a loader's or a dashboard's key cannot.
    f"/{_SERVICE}/DeleteReadings": Scope.DELETE,
}


def read_keyring(path: Path) -> Keyring:
    """The keys in a key file; raises KeyFileError (naming the line, never a secret) or OSError.

    A file without a single key is an error: it would lock every caller out, and it is what
    a reader sees halfway through a non-atomic rewrite of the file. So is a file every user may
    write: anyone on the machine could add a key of their own. A file its group may write is
    allowed, with a warning. Being readable by all is fine: the file holds only digests.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IWOTH:
        raise KeyFileError(
            f"{path} is writable by every user (mode {mode:04o}), who could add keys of their own; "
            f"make it writable by its owner only (chmod go-w)"
        )
    if mode & stat.S_IWGRP:
        logger.warning(
            "the key file %s is writable by its group (mode %04o): every member could add keys; "
            "consider chmod g-w",
            path,
            mode,
        )
    keyring = Keyring(parse_key_file(path.read_text(encoding="utf-8")))
    if not len(keyring):
        raise KeyFileError("the file holds no key; add one with `timeseries-aggregation keys generate`")
    return keyring


class Authenticator:
    """The keys in force, and the decision for one call's metadata."""

    def __init__(self, keys_file: Path) -> None:
        self._keys_file = keys_file
        # None after a reload failed: no key is in force until one succeeds.
        self._keyring: Keyring | None = read_keyring(keys_file)

    def reload(self) -> bool:
        """Re-read the key file (on SIGHUP); whether it loaded.

        A broken or empty file takes every key out of force until a good one is loaded: the
        reload may have been meant to revoke a key, and keeping the old keys would leave that
        key working. Calls then fail UNAVAILABLE, which clients retry, and health reports
        NOT_SERVING (app.py), so load balancers send them to another replica.
        """
        try:
            keyring = read_keyring(self._keys_file)
        except (OSError, KeyFileError, UnicodeDecodeError) as error:
            self._keyring = None
            logger.error(
                "API keys not reloaded, no key is in force: %s; every call of the service fails "
                "UNAVAILABLE until the file is fixed and SIGHUP sent again",
                error,
            )
            return False
        self._keyring = keyring
        logger.info("API keys reloaded: %s", counted(len(keyring), "key"))
        return True

    def caller(self, metadata: Iterable[tuple[str, str | bytes]], scope: Scope | None) -> ApiKey:
        """The key the metadata presents, or raise Unauthenticated/PermissionDeniedError.

        scope None: the method has no scope, and no key may call it. Raises KeysUnavailableError
        while no key is in force.
        """
        keyring = self._keyring
        if keyring is None:
            raise KeysUnavailableError(
                "the server's API key file could not be reloaded; its operator must fix it and send SIGHUP"
            )
        presented = [value for name, value in metadata if name == "authorization"]
        if not presented:
            raise UnauthenticatedError("send the metadata 'authorization: Bearer <API key>'")
        if len(presented) > 1:
            # Proxies and clients disagree on which of several values counts: accept none.
            raise UnauthenticatedError(f"send one 'authorization' metadata entry, not {len(presented)}")
        value = presented[0]
        text = value if isinstance(value, str) else value.decode(errors="replace")
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization metadata must be 'Bearer <API key>'")
        api_key = keyring.find(token.strip())
        if api_key is None:
            raise UnauthenticatedError("the API key is not valid")
        if scope is None or scope not in api_key.scopes:
            needed = f"the {scope.value!r} scope" if scope else "a scope no key has"
            raise PermissionDeniedError(f"the API key {api_key.name!r} does not have {needed}")
        return api_key


def _refusal_reason(error: Exception) -> Reason:
    if isinstance(error, KeysUnavailableError):
        return Reason.KEYS_UNAVAILABLE
    return Reason.UNAUTHENTICATED if isinstance(error, UnauthenticatedError) else Reason.PERMISSION_DENIED


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls of the service without a key of the scope they need, or over the key's rate."""

    def __init__(
        self, authenticator: Authenticator, refusals: Refusals | None = None, quotas: KeyQuotas | None = None
    ) -> None:
        self.authenticator = authenticator
        self._refusals = refusals
        self._quotas = quotas

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(f"/{_SERVICE}/"):
            return handler
        scope = METHOD_SCOPES.get(method)
        # Decided from the metadata, before gRPC has read a byte of the request.
        try:
            api_key = self.authenticator.caller(handler_call_details.invocation_metadata or (), scope)
            limits = self._quotas.limits_of(api_key) if self._quotas is not None else None
            if self._quotas is not None and limits is not None:
                self._quotas.take_call(api_key.name, limits, method)
        except (UnauthenticatedError, PermissionDeniedError, LimitReachedError) as error:
            if self._refusals is not None and not isinstance(error, LimitReachedError):
                self._refusals.record(_refusal_reason(error), method)
            refused = error
            return refusing_handler(handler, lambda context: abort_for(context, refused, method))

        def admit() -> None:
            record = current_call()
            record.caller, record.scopes, record.limits = api_key.name, api_key.scopes, limits

        return run_first(handler, admit)
