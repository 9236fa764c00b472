"""API keys: the key file's format, scopes, and deciding who a presented key belongs to.

The key file holds one line per key, `NAME SCOPES sha256:HEX`, where HEX is the SHA-256 of
the key: the file never holds a key itself, so reading it (or a backup of it) grants nothing.
Optional `option=value` fields may follow, the key's own limits (domain.quotas):
`NAME SCOPES sha256:HEX streams=4 writes=2 rate=50 burst=100`.
"""

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from timeseries_aggregation.domain.quotas import KeyLimits, parse_key_options
from timeseries_aggregation.wording import counted

KEY_PREFIX = "tsa_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


class Scope(enum.Enum):
    """What a key may do: write readings, read aggregates and its own history, change the
    series catalog, read every caller's history, or delete readings."""

    INGEST = "ingest"
    QUERY = "query"
    # Labels name customers and sites, so setting them (and creating series) is its own power.
    CATALOG = "catalog"
    # History entries show other callers' series, labels and ranges: an operator's scope.
    HISTORY_ALL = "history-all"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's name (recorded with what it does), scopes, the SHA-256 of its secret, and the
    limits the key file gives it."""

    name: str
    scopes: frozenset[Scope]
    digest: bytes
    limits: KeyLimits = field(default_factory=KeyLimits)


class KeyFileError(ValueError):
    """A key file line is malformed; the message names the line, never a secret."""


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A fresh random key: 256 bits from the operating system's generator."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_file_line(name: str, scopes: frozenset[Scope], key: str) -> str:
    """The line that authorises `key` under `name`."""
    scope_list = ",".join(scope.value for scope in Scope if scope in scopes)
    return f"{name} {scope_list} sha256:{digest_of(key).hex()}"


def parse_scopes(text: str) -> frozenset[Scope]:
    """'ingest,query' to scopes; raises ValueError naming what is unknown."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = {scope.value: scope for scope in Scope}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"scopes must be a comma-separated subset of {','.join(known)}; got {text!r}")
    return frozenset(known[name] for name in names)


def parse_key_file(text: str) -> list[ApiKey]:
    """Keys from a key file's text; blank lines and lines starting with '#' are skipped."""
    keys: list[ApiKey] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.strip()
        if not content or content.startswith("#"):
            continue
        fields = content.split()
        if len(fields) < 3:
            raise KeyFileError(
                f"line {number}: expected 'NAME SCOPES sha256:HEX', found {counted(len(fields), 'field')}"
            )
        name, scope_text, digest_text, *options = fields
        if not _NAME.fullmatch(name):
            raise KeyFileError(f"line {number}: a name is 1-64 letters, digits, '.', '_' or '-'")
        if name in names:
            raise KeyFileError(f"line {number}: the name {name!r} is used twice")
        try:
            scopes = parse_scopes(scope_text)
        except ValueError as error:
            raise KeyFileError(f"line {number}: {error}") from None
        digest = _DIGEST.fullmatch(digest_text)
        if digest is None:
            raise KeyFileError(f"line {number}: the third field must be sha256: and 64 lowercase hex digits")
        try:
            limits = parse_key_options(options)
        except ValueError as error:
            raise KeyFileError(f"line {number}: {error}") from None
        names.add(name)
        keys.append(ApiKey(name, scopes, bytes.fromhex(digest.group(1)), limits))
    return keys


class Keyring:
    """The keys in force; replaced as a whole when the key file is reloaded."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = tuple(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, presented: str) -> ApiKey | None:
        """The key whose digest matches. Every key is compared, each in constant time, so
        the time taken says nothing about which key, or how much of one, matched."""
        digest = digest_of(presented)
        found = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found
