"""Page sizes and opaque page tokens: round trips, reuse with other parameters, garbage."""

import base64
import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from timeseries_aggregation.domain.aggregation import AggregateQuery, make_aggregate_query
from timeseries_aggregation.domain.paging import (
    PageRequest,
    buckets_next_page_token,
    buckets_page_request,
    encode_token,
    history_next_page_token,
    history_page_request,
    query_fingerprint,
    resolve_page_size,
)
from timeseries_aggregation.domain.readings import EARLIEST_TIME, LATEST_TIME
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.limits import (
    BUCKETS_DEFAULT_PAGE_SIZE,
    BUCKETS_MAX_PAGE_SIZE,
    HISTORY_DEFAULT_PAGE_SIZE,
    HISTORY_MAX_PAGE_SIZE,
)

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

Result = TypeVar("Result")

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
QUERY = make_aggregate_query(
    "meter-1",
    Granularity.HOURLY,
    datetime(2025, 1, 1, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
    "Europe/Berlin",
)
LAST_BUCKET_START = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
# Queries that differ from QUERY in exactly one parameter.
OTHER_QUERIES = {
    "series_id": make_aggregate_query(
        "meter-2", QUERY.granularity, QUERY.time_range.start_time, QUERY.time_range.end_time, QUERY.time_zone
    ),
    "granularity": make_aggregate_query(
        QUERY.series_id,
        Granularity.DAY_OF_MONTH,
        QUERY.time_range.start_time,
        QUERY.time_range.end_time,
        QUERY.time_zone,
    ),
    "start_time": make_aggregate_query(
        QUERY.series_id,
        QUERY.granularity,
        datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        QUERY.time_range.end_time,
        QUERY.time_zone,
    ),
    "unbounded_start": make_aggregate_query(
        QUERY.series_id, QUERY.granularity, None, QUERY.time_range.end_time, QUERY.time_zone
    ),
    "end_time": make_aggregate_query(
        QUERY.series_id,
        QUERY.granularity,
        QUERY.time_range.start_time,
        datetime(2025, 12, 31, tzinfo=UTC),
        QUERY.time_zone,
    ),
    "unbounded_end": make_aggregate_query(
        QUERY.series_id, QUERY.granularity, QUERY.time_range.start_time, None, QUERY.time_zone
    ),
    "time_zone": make_aggregate_query(
        QUERY.series_id,
        QUERY.granularity,
        QUERY.time_range.start_time,
        QUERY.time_range.end_time,
        "Europe/Paris",
    ),
}
ZONE_NAMES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"]

instants = st.datetimes(
    min_value=EARLIEST_TIME.replace(tzinfo=None),
    max_value=(LATEST_TIME - timedelta(microseconds=1)).replace(tzinfo=None),
    timezones=st.just(UTC),
)
optional_instants = st.none() | st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2024, 1, 3), timezones=st.just(UTC)
)
history_ids = st.integers(min_value=1, max_value=2**63 - 1)


@st.composite
def queries(draw: st.DrawFn) -> AggregateQuery:
    """Valid queries from a small space, so that two draws are often equal."""
    start_time, end_time = draw(optional_instants), draw(optional_instants)
    if start_time is not None and end_time is not None and start_time >= end_time:
        start_time = None
    return make_aggregate_query(
        draw(st.sampled_from(["meter-1", "meter-2", "Zähler 3"])),
        draw(st.sampled_from(Granularity)),
        start_time,
        end_time,
        draw(st.sampled_from(ZONE_NAMES)),
    )


def token_error(request: Callable[..., object], *arguments: object) -> InvalidArgumentError:
    """The InvalidArgumentError a page request function raises for the given arguments."""
    with pytest.raises(InvalidArgumentError) as caught:
        request(*arguments)
    return caught.value


def outcome(request: Callable[[], Result]) -> Result | InvalidArgumentError:
    """What the request returns, or the InvalidArgumentError it raises; anything else propagates."""
    try:
        return request()
    except InvalidArgumentError as error:
        return error


def assert_only_page_token_errors(request: Callable[[], object]) -> None:
    """The request either succeeds or fails with InvalidArgumentError for page_token."""
    result = outcome(request)

    assert not isinstance(result, InvalidArgumentError) or result.field == "page_token"


def assert_page_token_rejected(token: str) -> None:
    """Both kinds of list reject the token as a page_token."""
    for error in (
        token_error(buckets_page_request, QUERY, 0, token),
        token_error(history_page_request, 0, token),
    ):
        assert error.field == "page_token"


def encode_payload(payload: object) -> str:
    """A token the way the service encodes one, around an arbitrary JSON payload."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


class TestPageSize:
    @pytest.mark.parametrize(
        ("requested", "expected"),
        [(0, 50), (1, 1), (49, 49), (500, 500), (501, 500), (2**63, 500)],
    )
    def test_zero_means_default_and_large_is_capped(self, requested: int, expected: int) -> None:
        assert resolve_page_size(requested, default=50, maximum=500) == expected

    @pytest.mark.parametrize("requested", [-1, -(2**31)])
    def test_negative_is_rejected(self, requested: int) -> None:
        error = token_error(resolve_page_size, requested, 50, 500)

        assert error.field == "page_size"
        assert error.description == f"must not be negative, got {requested}"

    def test_buckets_and_history_have_their_own_limits(self) -> None:
        assert buckets_page_request(QUERY, 0, "") == PageRequest(BUCKETS_DEFAULT_PAGE_SIZE, None)
        assert buckets_page_request(QUERY, 10**9, "").page_size == BUCKETS_MAX_PAGE_SIZE
        assert history_page_request(0, "") == PageRequest(HISTORY_DEFAULT_PAGE_SIZE, None)
        assert history_page_request(10**9, "").page_size == HISTORY_MAX_PAGE_SIZE

    def test_negative_page_size_is_rejected_before_the_token_is_read(self) -> None:
        assert token_error(buckets_page_request, QUERY, -1, "garbage").field == "page_size"
        assert token_error(history_page_request, -1, "garbage").field == "page_size"

    @given(st.integers(min_value=1, max_value=BUCKETS_MAX_PAGE_SIZE))
    def test_any_size_up_to_the_maximum_is_kept(self, requested: int) -> None:
        assert buckets_page_request(QUERY, requested, "").page_size == requested


class TestBucketsToken:
    def test_round_trip_gives_back_the_last_bucket_start(self) -> None:
        token = buckets_next_page_token(QUERY, LAST_BUCKET_START)

        assert buckets_page_request(QUERY, 0, token) == PageRequest(
            BUCKETS_DEFAULT_PAGE_SIZE, LAST_BUCKET_START
        )

    @given(instants)
    def test_any_instant_round_trips_to_the_microsecond(self, instant: datetime) -> None:
        token = buckets_next_page_token(QUERY, instant)
        after = buckets_page_request(QUERY, 0, token).after

        assert after == instant
        assert after is not None
        assert after.utcoffset() == timedelta(0)
        assert after.microsecond == instant.microsecond

    @given(instants, st.sampled_from(ZONE_NAMES))
    def test_instant_given_in_another_zone_round_trips_to_the_same_instant(
        self, instant: datetime, zone_name: str
    ) -> None:
        local = instant.astimezone(ZoneInfo(zone_name))

        assert buckets_page_request(QUERY, 0, buckets_next_page_token(QUERY, local)).after == instant

    @given(instants)
    def test_tokens_are_url_safe_without_padding(self, instant: datetime) -> None:
        assert URL_SAFE.fullmatch(buckets_next_page_token(QUERY, instant))

    @pytest.mark.parametrize("page_size", [1, 7, BUCKETS_MAX_PAGE_SIZE])
    def test_page_size_may_change_between_pages(self, page_size: int) -> None:
        token = buckets_next_page_token(QUERY, LAST_BUCKET_START)

        assert buckets_page_request(QUERY, page_size, token) == PageRequest(page_size, LAST_BUCKET_START)

    def test_an_equal_query_built_again_accepts_the_token(self) -> None:
        token = buckets_next_page_token(QUERY, LAST_BUCKET_START)
        same = dataclasses.replace(QUERY)

        assert buckets_page_request(same, 0, token).after == LAST_BUCKET_START

    @pytest.mark.parametrize("changed", list(OTHER_QUERIES))
    def test_token_is_rejected_for_a_query_differing_in_one_parameter(self, changed: str) -> None:
        token = buckets_next_page_token(QUERY, LAST_BUCKET_START)

        error = token_error(buckets_page_request, OTHER_QUERIES[changed], 0, token)

        assert error.field == "page_token"
        assert error.description == (
            "belongs to a different request; reuse a token only with the same parameters "
            "(page_size may change)"
        )

    @given(queries(), queries(), instants)
    def test_token_is_rejected_by_any_other_query(
        self, issuing: AggregateQuery, continuing: AggregateQuery, instant: datetime
    ) -> None:
        assume(continuing != issuing)
        token = buckets_next_page_token(issuing, instant)

        assert token_error(buckets_page_request, continuing, 0, token).field == "page_token"

    @given(queries(), instants, st.integers(min_value=0, max_value=2 * BUCKETS_MAX_PAGE_SIZE))
    def test_token_is_accepted_by_the_same_query_with_any_page_size(
        self, issuing: AggregateQuery, instant: datetime, page_size: int
    ) -> None:
        token = buckets_next_page_token(issuing, instant)
        time_range = issuing.time_range
        rebuilt = make_aggregate_query(
            issuing.series_id,
            issuing.granularity,
            time_range.start_time,
            time_range.end_time,
            issuing.time_zone,
        )

        page = buckets_page_request(rebuilt, page_size, token)

        assert page.after == instant
        assert page.page_size == resolve_page_size(
            page_size, BUCKETS_DEFAULT_PAGE_SIZE, BUCKETS_MAX_PAGE_SIZE
        )

    def test_history_token_is_rejected_as_a_buckets_token(self) -> None:
        error = token_error(buckets_page_request, QUERY, 0, history_next_page_token(42))

        assert error.field == "page_token"
        assert "different request" in error.description

    @pytest.mark.parametrize("position", [2**63, -(2**63), 10**30])
    def test_position_beyond_any_datetime_is_rejected(self, position: int) -> None:
        token = buckets_next_page_token(QUERY, LAST_BUCKET_START)
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))

        error = token_error(buckets_page_request, QUERY, 0, encode_payload({**payload, "p": position}))

        assert error.field == "page_token"

    @pytest.mark.parametrize(
        ("granularity", "first_bucket_start"),
        [
            (Granularity.HOURLY, datetime(1969, 12, 31, 23, 30, tzinfo=UTC)),
            (Granularity.DAY_OF_MONTH, datetime(1969, 12, 31, 18, 30, tzinfo=UTC)),
            (Granularity.MONTHLY, datetime(1969, 12, 31, 18, 30, tzinfo=UTC)),
        ],
    )
    def test_the_first_bucket_may_start_before_the_supported_range(
        self, granularity: Granularity, first_bucket_start: datetime
    ) -> None:
        query = make_aggregate_query("meter-1", granularity, None, None, "Asia/Kolkata")
        token = buckets_next_page_token(query, first_bucket_start)

        assert buckets_page_request(query, 1, token) == PageRequest(1, first_bucket_start)
        with pytest.raises(InvalidArgumentError):
            buckets_page_request(
                query, 1, buckets_next_page_token(query, first_bucket_start - timedelta(seconds=1))
            )


class TestHistoryToken:
    @given(history_ids)
    def test_any_entry_id_round_trips(self, entry_id: int) -> None:
        token = history_next_page_token(entry_id)

        assert history_page_request(0, token) == PageRequest(HISTORY_DEFAULT_PAGE_SIZE, entry_id)
        assert history_page_request(3, token) == PageRequest(3, entry_id)
        assert URL_SAFE.fullmatch(token)

    def test_buckets_token_is_rejected_as_a_history_token(self) -> None:
        error = token_error(history_page_request, 0, buckets_next_page_token(QUERY, LAST_BUCKET_START))

        assert error.field == "page_token"
        assert "different request" in error.description


class TestMalformedTokens:
    @pytest.mark.parametrize(
        "token",
        [
            "x",
            "====",
            "not a token",
            "é",
            "\x00",
            encode_payload([1, "history", "", 3]),
            encode_payload({"v": 2, "k": "history", "f": "", "p": 3}),
            encode_payload({"k": "history", "f": "", "p": 3}),
            encode_payload({"v": 1, "k": "history", "f": "", "p": "3"}),
            encode_payload({"v": 1, "k": "history", "f": "", "p": 3.0}),
            encode_payload({"v": 1, "k": "history", "f": "", "p": True}),
            encode_payload({"v": 1, "k": "history", "f": None, "p": 3}),
            encode_payload({"v": 1, "k": 7, "f": "", "p": 3}),
            base64.urlsafe_b64encode(b'{"v":1,"k":"history","f":"","p":' + b"9" * 5000 + b"}").decode(),
            base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
        ],
    )
    def test_malformed_token_is_rejected_telling_the_caller_what_to_do(self, token: str) -> None:
        for error in (
            token_error(buckets_page_request, QUERY, 0, token),
            token_error(history_page_request, 0, token),
        ):
            assert error.field == "page_token"
            assert error.description == (
                "is malformed; pass the next_page_token of a previous response unchanged"
            )

    @given(st.text(min_size=1))
    def test_random_text_is_rejected_as_a_page_token(self, token: str) -> None:
        assert_page_token_rejected(token)

    @given(st.binary(min_size=1))
    def test_random_bytes_encoded_like_a_token_are_rejected(self, data: bytes) -> None:
        assert_page_token_rejected(base64.urlsafe_b64encode(data).decode().rstrip("="))

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children),
            max_leaves=12,
        )
    )
    def test_random_json_payloads_never_fail_any_other_way(self, payload: object) -> None:
        token = encode_payload(payload)

        assert_only_page_token_errors(lambda: buckets_page_request(QUERY, 0, token))
        assert_only_page_token_errors(lambda: history_page_request(0, token))

    @given(
        st.fixed_dictionaries(
            {
                "v": st.just(1),
                "k": st.sampled_from(["buckets", "history"]),
                "f": st.sampled_from(["", query_fingerprint(QUERY)]),
                "p": st.integers(),
            }
        )
    )
    def test_well_formed_payloads_with_any_position_never_fail_any_other_way(
        self, payload: dict[str, object]
    ) -> None:
        token = encode_payload(payload)

        assert_only_page_token_errors(lambda: buckets_page_request(QUERY, 0, token))
        assert_only_page_token_errors(lambda: history_page_request(0, token))

    @given(st.data())
    def test_tampered_tokens_are_rejected_or_read_as_some_position(self, data: st.DataObject) -> None:
        token = buckets_next_page_token(QUERY, data.draw(instants, label="instant"))
        index = data.draw(st.integers(min_value=0, max_value=len(token) - 1), label="index")
        replacement = data.draw(st.text(max_size=3), label="replacement")
        how = data.draw(st.sampled_from(["replace", "insert", "truncate"]), label="how")
        tampered = {
            "replace": token[:index] + replacement + token[index + 1 :],
            "insert": token[:index] + replacement + token[index:],
            # An empty token asks for the first page, so a truncation keeps at least one character.
            "truncate": token[: max(index, 1)],
        }[how]

        result = outcome(lambda: buckets_page_request(QUERY, 0, tampered))

        if isinstance(result, InvalidArgumentError):
            assert result.field == "page_token"
        else:
            # Tokens are not signed: an edit that keeps the JSON valid moves the position.
            assert isinstance(result.after, datetime)

    def test_deeply_nested_payload_is_rejected_as_malformed(self) -> None:
        # 1,336 characters: small enough for any request, deep enough to exhaust the recursion limit.
        token = base64.urlsafe_b64encode(b"[" * 1000).decode()

        assert_page_token_rejected(token)


@pytest.mark.parametrize("position", [0, -1, 2**63, 2**70])
def test_history_token_with_an_impossible_id_is_rejected(position: int) -> None:
    token = encode_token("history", "", position)
    with pytest.raises(InvalidArgumentError) as raised:
        history_page_request(0, token)
    assert raised.value.field == "page_token"
