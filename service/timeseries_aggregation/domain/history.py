"""A recorded QueryAggregates call: what its entry keeps, and who may read it."""

from dataclasses import dataclass
from datetime import datetime

from timeseries_aggregation.domain.aggregation import AggregateQuery
from timeseries_aggregation.domain.api_keys import Scope
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.limits import HISTORY_MAX_LABELS, HISTORY_MAX_SERIES_IDS, HISTORY_TEXT_MAX_LENGTH

# Ends an id or label value the entry cut, before the number of characters left out.
CUT_MARKER = "…"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One successful QueryAggregates call, as listed by ListQueryHistory.

    The query's selector is as recorded: shortened where selector_truncated says so.
    """

    id: int
    query_time: datetime
    query: AggregateQuery
    page_size: int
    continued_page: bool
    bucket_count: int
    caller_name: str
    omitted_series_ids: int
    omitted_labels: int
    selector_truncated: bool


@dataclass(frozen=True, slots=True)
class RecordedSelector:
    """A selector as a history entry keeps it: a few ids and labels, each of a few characters."""

    selector: SeriesSelector
    omitted_series_ids: int
    omitted_labels: int
    truncated: bool


def shortened(text: str) -> str:
    """text, or its first HISTORY_TEXT_MAX_LENGTH characters, the cut marker and how many
    characters are left out: 'meter-of-the-north-wing-…(+40)'."""
    if len(text) <= HISTORY_TEXT_MAX_LENGTH:
        return text
    return f"{text[:HISTORY_TEXT_MAX_LENGTH]}{CUT_MARKER}(+{len(text) - HISTORY_TEXT_MAX_LENGTH})"


def recorded_selector(selector: SeriesSelector) -> RecordedSelector:
    """What the history keeps of a selector: bounded whatever the request held (a selector
    may name 1,000 ids of 128 characters and 64 labels of 255), and visibly so when shortened."""
    kept_ids = selector.series_ids[:HISTORY_MAX_SERIES_IDS] if selector.series_ids is not None else ()
    kept_keys = sorted(selector.labels)[:HISTORY_MAX_LABELS]
    kept_texts = [*kept_ids, *(selector.labels[key] for key in kept_keys)]
    omitted_series_ids = len(selector.series_ids or ()) - len(kept_ids)
    omitted_labels = len(selector.labels) - len(kept_keys)
    return RecordedSelector(
        selector=SeriesSelector(
            series_ids=tuple(map(shortened, kept_ids)) if selector.series_ids is not None else None,
            labels={key: shortened(selector.labels[key]) for key in kept_keys},
        ),
        omitted_series_ids=omitted_series_ids,
        omitted_labels=omitted_labels,
        truncated=bool(omitted_series_ids or omitted_labels)
        or any(len(text) > HISTORY_TEXT_MAX_LENGTH for text in kept_texts),
    )


def visible_caller(caller: str, scopes: frozenset[Scope] | None) -> str | None:
    """Whose history entries a caller may list: its own (the key's name), or everyone's (None)
    for a key with the history-all scope and when authentication is off (scopes None), where
    there is one caller."""
    if scopes is None or Scope.HISTORY_ALL in scopes:
        return None
    return caller
