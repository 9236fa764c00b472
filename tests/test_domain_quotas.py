"""Key-file options and the token bucket: pure rules, no server."""

import pytest

from timeseries_aggregation.domain.api_keys import KeyFileError, Scope, key_file_line, new_key, parse_key_file
from timeseries_aggregation.domain.quotas import Holdings, KeyLimits, TokenBucket, parse_key_options

pytestmark = pytest.mark.any_engine

LINE = key_file_line("loader", frozenset({Scope.INGEST}), new_key())


def test_a_line_without_options_has_the_server_defaults() -> None:
    (key,) = parse_key_file(LINE)
    assert key.limits == KeyLimits()
    defaults = KeyLimits(streams=16, writes=8, rate=100.0, burst=200)
    assert key.limits.or_defaults(defaults) == defaults


def test_options_after_the_digest_set_the_keys_own_limits() -> None:
    (key,) = parse_key_file(f"{LINE} streams=4 writes=2 rate=2.5 burst=10")
    assert key.limits == KeyLimits(streams=4, writes=2, rate=2.5, burst=10)
    (key,) = parse_key_file(f"{LINE}   burst=3\t rate=0")
    assert key.limits == KeyLimits(rate=0.0, burst=3)
    assert key.limits.or_defaults(KeyLimits(1, 1, 50.0, 100)) == KeyLimits(1, 1, 0.0, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("streams=0", "line 2: field 4: streams must be a whole number from 1 to 1000000"),
        ("writes=two", "line 2: field 4: writes must be a whole number from 1 to 1000000"),
        ("burst=-1", "line 2: field 4: burst must be a whole number from 1 to 1000000"),
        ("streams=²", "line 2: field 4: streams must be a whole number from 1 to 1000000"),
        ("rate=-1", "line 2: field 4: rate must be calls per second from 0 (no limit) to 1000000"),
        ("rate=nan", "line 2: field 4: rate must be calls per second from 0 (no limit) to 1000000"),
        ("rate=inf", "line 2: field 4: rate must be calls per second from 0 (no limit) to 1000000"),
        ("streams=1 streams=2", "line 2: field 5: the option 'streams' is given twice"),
        ("streams=1 speed=3", "line 2: field 5 is not an option; options are streams=N, writes=N"),
        ("streams", "line 2: field 4 is not an option"),
    ],
)
def test_a_bad_option_is_a_key_file_error_naming_the_line(options: str, message: str) -> None:
    with pytest.raises(KeyFileError) as raised:
        parse_key_file(f"# keys\n{LINE} {options}")
    assert str(raised.value).startswith(message)


def test_an_unknown_field_is_not_quoted_as_it_may_be_a_pasted_key() -> None:
    key = new_key()
    with pytest.raises(KeyFileError) as raised:
        parse_key_file(f"{LINE} {key}")
    assert key not in str(raised.value)
    with pytest.raises(ValueError, match="field 4") as refused:
        parse_key_options([f"rate={key}"])
    assert key not in str(refused.value)


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25)
    assert bucket.take(100.5) == 0.0
    # Saved up for a long while: never more than the burst.
    assert [bucket.take(1000.0) for _ in range(4)][-1] == pytest.approx(0.5)


def test_holdings_count_per_name_up_to_a_limit() -> None:
    holdings = Holdings()
    assert holdings.try_take("a", 2)
    assert holdings.try_take("a", 2)
    assert not holdings.try_take("a", 2)
    assert holdings.try_take("b", 1)
    holdings.give_back("a")
    assert holdings.held("a") == 1
    assert holdings.try_take("a", 2)
