"""Where a zone's UTC offset changes."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from timeseries_aggregation.domain.zone_offsets import OffsetChange, offset_changes


def test_each_change_is_found_to_the_second_with_the_offset_after_it() -> None:
    changes = offset_changes(
        ZoneInfo("Europe/Berlin"), datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert changes == [
        OffsetChange(datetime(2025, 3, 30, 1, tzinfo=UTC), timedelta(hours=2)),
        OffsetChange(datetime(2025, 10, 26, 1, tzinfo=UTC), timedelta(hours=1)),
    ]


def test_a_change_at_the_end_is_found_and_one_at_the_start_is_not() -> None:
    change = datetime(2025, 3, 30, 1, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    before = change - timedelta(hours=5)
    assert [found.instant for found in offset_changes(berlin, before, change)] == [change]
    assert offset_changes(berlin, change, change + timedelta(hours=5)) == []


def test_a_zone_at_a_fixed_offset_never_changes() -> None:
    start, end = datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    assert offset_changes(ZoneInfo("UTC"), start, end) == []
