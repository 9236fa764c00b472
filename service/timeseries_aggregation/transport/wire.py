"""Parsing request bytes without ever raising: a malformed request is the caller's error."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

Parsed = TypeVar("Parsed", bound=Message)


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """Bytes that are not a valid message of the expected type."""

    type_name: str


def tolerant_parser(message_type: type[Parsed]) -> Callable[[bytes], Parsed | MalformedMessage]:
    """A request deserializer that returns a MalformedMessage instead of raising, so the
    handler can answer INVALID_ARGUMENT rather than gRPC answering INTERNAL."""

    def parse(data: bytes) -> Parsed | MalformedMessage:
        try:
            return message_type.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            return MalformedMessage(message_type.DESCRIPTOR.full_name)

    return parse
