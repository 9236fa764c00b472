"""The series catalog: what a series is beyond its readings, and how requests pick series.

A series carries labels (for selecting and grouping) and optionally the interval it is
expected to report at; its first and last reading time and reading count are kept by the
storage in the same transactions that change its readings.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from timeseries_aggregation.domain.characters import unprintable_character
from timeseries_aggregation.domain.readings import check_series_id
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.limits import (
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    MAX_LABELS,
    READING_INTERVAL_MAX_SECONDS,
    READING_INTERVAL_MIN_SECONDS,
    SELECTOR_MAX_SERIES_IDS,
)
from timeseries_aggregation.wording import quoted

# The name under which a series' own id is grouped by (and shown in a bucket's group): reserved,
# so that no label can take it.
SERIES_ID_KEY = "series_id"

_LABEL_KEY = re.compile(rf"[a-z][a-z0-9_]{{0,{LABEL_KEY_MAX_LENGTH - 1}}}")

Labels = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Series:
    """A series as the catalog holds it."""

    series_id: str
    labels: dict[str, str]
    reading_interval_seconds: int | None
    first_reading_time: datetime | None
    last_reading_time: datetime | None
    reading_count: int


@dataclass(frozen=True, slots=True)
class SeriesUpdate:
    """What UpdateSeries sets: a field left None is kept as stored (it was not in the mask).

    Clearing is explicit: labels {} removes every label, and clear_reading_interval removes
    the declared interval.
    """

    series_id: str
    labels: dict[str, str] | None
    reading_interval_seconds: int | None
    clear_reading_interval: bool


@dataclass(frozen=True, slots=True)
class SeriesSelector:
    """Series picked by id (when series_ids is not None) and by label pairs (all must match)."""

    series_ids: tuple[str, ...] | None
    labels: dict[str, str]

    @property
    def is_empty(self) -> bool:
        return self.series_ids is None and not self.labels


UPDATE_PATHS = ("labels", "reading_interval")


def check_labels(labels: Labels, field: str, max_labels: int = MAX_LABELS) -> dict[str, str]:
    """The labels as a plain dict, or InvalidArgumentError naming the first bad one."""
    if len(labels) > max_labels:
        raise InvalidArgumentError(field, f"holds {len(labels)} labels; the maximum is {max_labels}")
    for key in sorted(labels):
        if key == SERIES_ID_KEY:
            raise InvalidArgumentError(
                f"{field}[{quoted(key)}]",
                f"is a reserved key: {SERIES_ID_KEY!r} means the series' own id (as in group_by), so no "
                "label may use it; pick series by id with series_ids",
            )
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgumentError(
                f"{field}[{quoted(key)}]",
                f"is not a valid label key: 1 to {LABEL_KEY_MAX_LENGTH} characters of a-z, 0-9 and _, "
                "starting with a letter",
            )
        value = labels[key]
        if len(value) > LABEL_VALUE_MAX_LENGTH:
            raise InvalidArgumentError(
                f"{field}[{quoted(key)}]",
                f"is {len(value)} characters long; the maximum is {LABEL_VALUE_MAX_LENGTH}",
            )
        unprintable = unprintable_character(value)
        if unprintable is not None:
            raise InvalidArgumentError(
                f"{field}[{quoted(key)}]", f"holds {unprintable}; only printable characters are allowed"
            )
    return dict(labels)


def check_reading_interval(seconds: int, nanos: int, field: str) -> int:
    """The interval in whole seconds, or InvalidArgumentError."""
    if nanos != 0:
        raise InvalidArgumentError(field, "must be a whole number of seconds")
    if not READING_INTERVAL_MIN_SECONDS <= seconds <= READING_INTERVAL_MAX_SECONDS:
        raise InvalidArgumentError(
            field,
            f"is {seconds} s; it must lie between {READING_INTERVAL_MIN_SECONDS} s and "
            f"{READING_INTERVAL_MAX_SECONDS} s (one day)",
        )
    return seconds


def make_series_update(
    series_id: str,
    labels: Labels,
    reading_interval: tuple[int, int] | None,
    update_paths: Sequence[str],
) -> SeriesUpdate:
    """Validate an UpdateSeries request; `reading_interval` is (seconds, nanos) or None if absent."""
    check_series_id(series_id, "series.series_id")
    # AIP-134: without a mask, the populated fields are the mask, so a client that sends only
    # labels never clears the interval by leaving it out.
    populated = {"labels"} if labels else set()
    if reading_interval is not None:
        populated.add("reading_interval")
    paths = set(update_paths) or populated
    for position, path in enumerate(update_paths):
        if path not in UPDATE_PATHS:
            raise InvalidArgumentError(
                f"update_mask.paths[{position}]",
                f"{quoted(path)} is not a field that can be updated; "
                f"use {' or '.join(map(repr, UPDATE_PATHS))}",
            )
    new_labels = check_labels(labels, "series.labels") if "labels" in paths else None
    interval = None
    clear_interval = False
    if "reading_interval" in paths:
        if reading_interval is None:
            clear_interval = True
        else:
            interval = check_reading_interval(*reading_interval, field="series.reading_interval")
    return SeriesUpdate(series_id, new_labels, interval, clear_interval)


def make_selector(series_ids: Sequence[str], labels: Labels, field: str = "selector") -> SeriesSelector:
    """Validate a SeriesSelector; an empty one selects every series."""
    if len(series_ids) > SELECTOR_MAX_SERIES_IDS:
        raise InvalidArgumentError(
            f"{field}.series_ids",
            f"names {len(series_ids)} series; the maximum is {SELECTOR_MAX_SERIES_IDS}",
        )
    for position, series_id in enumerate(series_ids):
        check_series_id(series_id, f"{field}.series_ids[{position}]", allow_blank=True)
    return SeriesSelector(
        series_ids=tuple(sorted(set(series_ids))) if series_ids else None,
        labels=check_labels(labels, f"{field}.labels"),
    )
