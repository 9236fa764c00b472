"""Page sizes and opaque page tokens (AIP-158) that carry a keyset position.

A token names the kind of list it pages, a fingerprint of the request parameters it
belongs to, and the sort key of the last item returned. It holds no server state, so
any replica can continue it, and a reused token with other parameters is detected.
"""

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from timeseries_aggregation.domain.aggregation import AggregateQuery
from timeseries_aggregation.domain.batch import unix_micros
from timeseries_aggregation.domain.bucketing import bucket_containing
from timeseries_aggregation.domain.readings import EARLIEST_TIME, LATEST_TIME, check_series_id
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.limits import (
    BUCKETS_DEFAULT_PAGE_SIZE,
    BUCKETS_MAX_PAGE_SIZE,
    HISTORY_DEFAULT_PAGE_SIZE,
    HISTORY_MAX_PAGE_SIZE,
    SERIES_DEFAULT_PAGE_SIZE,
    SERIES_MAX_PAGE_SIZE,
)

_TOKEN_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


Position = TypeVar("Position")
Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class PageRequest(Generic[Position]):
    """How many items to return and after which position (None: from the start)."""

    page_size: int
    after: Position | None


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """The items of one page and whether another page follows."""

    items: list[Item]
    has_more: bool


def resolve_page_size(requested: int, default: int, maximum: int) -> int:
    """Apply AIP-158: 0 means the default, above the maximum is coerced, negative is an error."""
    if requested < 0:
        raise InvalidArgumentError("page_size", f"must not be negative, got {requested}")
    if requested == 0:
        return default
    return min(requested, maximum)


def query_fingerprint(query: AggregateQuery) -> str:
    """A short digest of every parameter that decides which buckets a query returns."""
    time_range = query.time_range
    parts = [
        query.series_id,
        query.granularity.value,
        time_range.start_time.isoformat() if time_range.start_time else "",
        time_range.end_time.isoformat() if time_range.end_time else "",
        query.time_zone,
    ]
    if query.is_portfolio:  # one-series tokens stay as they were before selectors existed
        parts += [
            selector_fingerprint(query.members),
            ",".join(query.group_by),
            "empty" if query.include_empty_buckets else "",
        ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def encode_token(kind: str, fingerprint: str, position: int | str | list[int | str]) -> str:
    payload = {"v": _TOKEN_VERSION, "k": kind, "f": fingerprint, "p": position}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_position(token: str, kind: str, fingerprint: str, position_type: type) -> object:
    """The position a token carries, or InvalidArgumentError('page_token')."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        valid = (
            isinstance(payload, dict)
            and payload.get("v") == _TOKEN_VERSION
            and isinstance(payload.get("k"), str)
            and isinstance(payload.get("f"), str)
            and isinstance(payload.get("p"), position_type)
            and not isinstance(payload.get("p"), bool)
        )
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        valid = False
    if not valid:
        raise InvalidArgumentError(
            "page_token", "is malformed; pass the next_page_token of a previous response unchanged"
        )
    if payload["k"] != kind or payload["f"] != fingerprint:
        raise InvalidArgumentError(
            "page_token",
            "belongs to a different request; reuse a token only with the same parameters "
            "(page_size may change)",
        )
    return payload["p"]


def decode_token(token: str, kind: str, fingerprint: str) -> int:
    """Return the integer position a token carries, or raise InvalidArgumentError('page_token')."""
    position = _decode_position(token, kind, fingerprint, int)
    assert isinstance(position, int)
    return position


def decode_text_token(token: str, kind: str, fingerprint: str) -> str:
    """Return the text position a token carries, or raise InvalidArgumentError('page_token')."""
    position = _decode_position(token, kind, fingerprint, str)
    assert isinstance(position, str)
    return position


def buckets_page_request(query: AggregateQuery, page_size: int, page_token: str) -> PageRequest[datetime]:
    """Resolve QueryAggregates paging: the position is the start of the last bucket returned."""
    size = resolve_page_size(page_size, BUCKETS_DEFAULT_PAGE_SIZE, BUCKETS_MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size, None)
    micros = decode_token(page_token, "buckets", query_fingerprint(query))
    return PageRequest(size, _bucket_start(query, micros))


# Where a page of grouped buckets ends: the last bucket's group values and start.
GroupPosition = tuple[tuple[str, ...], datetime]


def group_buckets_page_request(
    query: AggregateQuery, page_size: int, page_token: str
) -> PageRequest[GroupPosition]:
    """Resolve paging of a query over selected series: the position is the last bucket's group
    and start."""
    size = resolve_page_size(page_size, BUCKETS_DEFAULT_PAGE_SIZE, BUCKETS_MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size, None)
    position = _decode_position(page_token, "group-buckets", query_fingerprint(query), list)
    assert isinstance(position, list)
    *group, micros = position
    if (
        len(group) != len(query.group_by)
        or not all(isinstance(value, str) for value in group)
        or not isinstance(micros, int)
        or isinstance(micros, bool)
    ):
        raise InvalidArgumentError("page_token", "is malformed")
    return PageRequest(size, (tuple(group), _bucket_start(query, micros)))


def group_buckets_next_page_token(
    query: AggregateQuery, group: tuple[str, ...], last_bucket_start: datetime
) -> str:
    micros = unix_micros(last_bucket_start)
    return encode_token("group-buckets", query_fingerprint(query), [*group, micros])


def _bucket_start(query: AggregateQuery, micros: int) -> datetime:
    """The bucket start a token carries, checked to be one a query could have returned."""
    try:
        after = _EPOCH + timedelta(microseconds=micros)
    except OverflowError as error:
        raise InvalidArgumentError("page_token", "is malformed") from error
    # A bucket holds readings of the storable range, so it starts no earlier than the bucket
    # of the earliest one (before 1970 in most zones) and before the latest.
    earliest_start = bucket_containing(EARLIEST_TIME, query.granularity, query.zone).start
    if not earliest_start <= after < LATEST_TIME:
        raise InvalidArgumentError("page_token", "is malformed")
    return after


def buckets_next_page_token(query: AggregateQuery, last_bucket_start: datetime) -> str:
    micros = unix_micros(last_bucket_start)
    return encode_token("buckets", query_fingerprint(query), micros)


def history_page_request(page_size: int, page_token: str) -> PageRequest[int]:
    """Resolve ListQueryHistory paging: the position is the id of the last entry returned."""
    size = resolve_page_size(page_size, HISTORY_DEFAULT_PAGE_SIZE, HISTORY_MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size, None)
    last_id = decode_token(page_token, "history", "")
    if not 0 < last_id < 2**63:  # ids are positive bigints
        raise InvalidArgumentError("page_token", "is malformed")
    return PageRequest(size, last_id)


def history_next_page_token(last_entry_id: int) -> str:
    return encode_token("history", "", last_entry_id)


def selector_fingerprint(selector: SeriesSelector) -> str:
    """A short digest of a selector, so a token is not continued with another one."""
    canonical = json.dumps(
        [selector.series_ids, sorted(selector.labels.items())], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def series_page_request(selector: SeriesSelector, page_size: int, page_token: str) -> PageRequest[str]:
    """Resolve ListSeries paging: the position is the series_id of the last series returned."""
    size = resolve_page_size(page_size, SERIES_DEFAULT_PAGE_SIZE, SERIES_MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size, None)
    last_series_id = decode_text_token(page_token, "series", selector_fingerprint(selector))
    try:
        check_series_id(last_series_id, "page_token", allow_blank=True)
    except InvalidArgumentError:
        raise InvalidArgumentError("page_token", "is malformed") from None
    return PageRequest(size, last_series_id)


def series_next_page_token(selector: SeriesSelector, last_series_id: str) -> str:
    return encode_token("series", selector_fingerprint(selector), last_series_id)
