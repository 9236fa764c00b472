"""The time zone rule that the server and the command line share."""

import subprocess
import sys

import pytest

from timeseries_aggregation.domain.time_zones import READ_AS_FIXED_ABBREVIATIONS, check_time_zone
from timeseries_aggregation.errors import InvalidArgumentError


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/St_Johns", "EST"])
def test_iana_zones_are_kept_as_given(name: str) -> None:
    assert check_time_zone(name, "time_zone") == name


@pytest.mark.parametrize("name", [*sorted(READ_AS_FIXED_ABBREVIATIONS), "localtime", "Factory", "", "utc"])
def test_a_refused_name_is_refused_for_the_field_named(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        check_time_zone(name, "--time-zone")
    assert raised.value.field == "--time-zone"
    assert raised.value.description.startswith(f"{name!r} is ")


def test_the_rule_needs_nothing_of_the_server() -> None:
    # The client install's CLI imports it: no numpy, asyncpg or grpc behind it.
    script = (
        "import sys, timeseries_aggregation.domain.time_zones; "
        "print(sorted(m for m in ('numpy', 'asyncpg', 'grpc') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert completed.stdout.strip() == "[]", completed.stderr
