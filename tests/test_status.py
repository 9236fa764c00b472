"""The one mapping of domain errors to gRPC statuses: the BadRequest it builds, bounded in size."""

from google.rpc import code_pb2, error_details_pb2

from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.transport.status import (
    FIELD_MAX_CHARACTERS,
    MESSAGE_MAX_CHARACTERS,
    bad_request_status,
)


def violation(field: str, description: str) -> error_details_pb2.BadRequest.FieldViolation:
    """The one field violation of the status built for InvalidArgumentError(field, description)."""
    status = bad_request_status(InvalidArgumentError(field, description))
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    [detail] = status.details
    assert detail.Unpack(bad_request)
    [only] = bad_request.field_violations
    assert status.message == f"{only.field}: {only.description}"
    return only


def test_a_bad_request_names_the_field_and_says_what_to_change() -> None:
    found = violation("time_zone", "'Mars/Olympus' is not a known IANA time zone")
    assert found.field == "time_zone"
    assert found.description == "'Mars/Olympus' is not a known IANA time zone"


def test_an_unbounded_field_and_description_are_cut_with_a_marker() -> None:
    found = violation("f" * 1_000_000, "d" * 16_000_000)
    assert found.field == "f" * FIELD_MAX_CHARACTERS + "… (1,000,000 characters)"
    assert found.description == "d" * MESSAGE_MAX_CHARACTERS + "… (16,000,000 characters)"
