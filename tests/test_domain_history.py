"""What a history entry keeps of a query, and whose entries a caller may list."""

from timeseries_aggregation.domain.api_keys import Scope
from timeseries_aggregation.domain.history import recorded_selector, shortened, visible_caller
from timeseries_aggregation.domain.series import SeriesSelector


def test_text_up_to_the_limit_is_kept_and_longer_text_says_how_much_was_cut() -> None:
    assert shortened("x" * 32) == "x" * 32
    assert shortened("x" * 33) == "x" * 32 + "…(+1)"
    assert shortened("y" * 128) == "y" * 32 + "…(+96)"


def test_a_selector_within_the_bounds_is_kept_as_it_is() -> None:
    selector = SeriesSelector(series_ids=tuple(f"m{n}" for n in range(8)), labels={"site": "berlin"})
    recorded = recorded_selector(selector)
    assert recorded.selector == selector
    assert (recorded.omitted_series_ids, recorded.omitted_labels, recorded.truncated) == (0, 0, False)
    labels_only = recorded_selector(SeriesSelector(series_ids=None, labels={f"k{n}": "v" for n in range(8)}))
    assert labels_only.selector.series_ids is None
    assert not labels_only.truncated


def test_a_larger_selector_keeps_the_first_ids_and_labels_and_counts_the_rest() -> None:
    labels = {f"k{n:02}": "v" for n in range(10, 0, -1)}
    recorded = recorded_selector(
        SeriesSelector(series_ids=tuple(f"m{n:02}" for n in range(9)), labels=labels)
    )
    assert recorded.selector.series_ids == tuple(f"m{n:02}" for n in range(8))
    assert list(recorded.selector.labels) == [f"k{n:02}" for n in range(1, 9)]
    assert (recorded.omitted_series_ids, recorded.omitted_labels, recorded.truncated) == (1, 2, True)


def test_a_cut_value_alone_marks_the_entry_truncated() -> None:
    recorded = recorded_selector(SeriesSelector(series_ids=None, labels={"customer": "c" * 40}))
    assert recorded.selector.labels == {"customer": "c" * 32 + "…(+8)"}
    assert (recorded.omitted_series_ids, recorded.omitted_labels, recorded.truncated) == (0, 0, True)


def test_a_key_sees_its_own_entries_unless_it_may_see_all() -> None:
    assert visible_caller("reader", frozenset({Scope.QUERY})) == "reader"
    assert visible_caller("auditor", frozenset({Scope.QUERY, Scope.HISTORY_ALL})) is None
    # Authentication off: one caller, every entry.
    assert visible_caller("", None) is None
