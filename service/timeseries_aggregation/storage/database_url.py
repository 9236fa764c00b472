"""The database URL checked before the driver sees it, with errors that quote none of it.

asyncpg's own parser fails on a malformed URL with messages (and tracebacks) that quote the
part it choked on, which for an unencoded '/', '#', '?' or '@' in the password is the password.
The checks follow the shape asyncpg reads: postgresql://[USER[:PASSWORD]@]HOST[:PORT][,...]
[/DATABASE][?NAME=VALUE&...]. Every message says what kind of problem there is and how to fix
it, never which characters are at fault: the URL, its user, password and host are secrets alike.
"""

import re
import urllib.parse

_SCHEMES = frozenset({"postgresql", "postgres"})
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODE_HINT = "percent-encode it (/ %2F, # %23, ? %3F, @ %40, : %3A, % %25, [ %5B, ] %5D)"


def check_database_url(url: str) -> None:
    """Raise ValueError, saying what kind of problem it is without quoting the URL, unless asyncpg
    can parse the URL."""
    if "#" in url:
        raise ValueError(f"holds a '#', which ends the URL there; if the password has one, {_ENCODE_HINT}")
    if _BAD_ESCAPE.search(url):
        raise ValueError(f"holds a '%' that starts no %XX escape; if the password has a '%', {_ENCODE_HINT}")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        # urllib's messages quote the URL's parts; a stray bracket is the usual cause.
        raise ValueError(
            "cannot be read as a URL: an IPv6 host goes in brackets, [::1]; if the password has "
            f"special characters, {_ENCODE_HINT}"
        ) from None
    if parts.scheme not in _SCHEMES:
        raise ValueError("must start with postgresql:// (or postgres://)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if "@" in userinfo:
        raise ValueError(f"holds more than one '@' before the host; if the password has one, {_ENCODE_HINT}")
    for host in hosts.split(",") if hosts else ():
        _check_host(host)
    for component in (userinfo, parts.path, parts.query):
        try:
            urllib.parse.unquote(component, errors="strict")
        except UnicodeDecodeError:
            raise ValueError("holds %XX escapes that decode to no UTF-8 text") from None
    if parts.query:
        try:
            urllib.parse.parse_qs(parts.query, strict_parsing=True)
        except ValueError:
            raise ValueError("the part after '?' must be NAME=VALUE pairs separated by '&'") from None


def _check_host(host: str) -> None:
    """One HOST[:PORT] of the URL's comma-separated list, as asyncpg splits it."""
    if not host:
        raise ValueError("names an empty host in its list of hosts")
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        if not bracket or not address:
            raise ValueError("has an IPv6 host without its closing ']'")
        if rest and not rest.startswith(":"):
            raise ValueError("has something other than :PORT after an IPv6 host's ']'")
        port = rest[1:] if rest else ""
        has_port = bool(rest)
    else:
        _, colon, port = host.partition(":")
        has_port = bool(colon)
    if has_port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(
            "has a port that is not a number from 1 to 65535; a '/', '?' or '#' in the password "
            f"ends the host part early: {_ENCODE_HINT}"
        )
