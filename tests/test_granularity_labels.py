"""A bucket's label, written out per format, is what strftime makes of the format."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timeseries_aggregation.granularities import GRANULARITIES, GranularityInfo

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


@given(
    info=st.sampled_from(GRANULARITIES),
    local_start=st.datetimes(min_value=datetime(1969, 12, 1), max_value=datetime(2101, 1, 31)),
)
def test_labels_are_those_of_strftime(info: GranularityInfo, local_start: datetime) -> None:
    quarter = str((local_start.month - 1) // 3 + 1)
    expected = local_start.strftime(info.label_format.replace("%q", quarter))
    assert info.label(local_start) == expected
    # The grid labels aware local times: the offset is no part of a label.
    assert info.label(local_start.replace(tzinfo=timezone(timedelta(hours=-9, minutes=-30)))) == expected


def test_every_format_is_written_out() -> None:
    # A format without its own writer would label through strftime, three times slower.
    from timeseries_aggregation.granularities import _LABELLERS

    assert {info.label_format for info in GRANULARITIES} <= set(_LABELLERS)
