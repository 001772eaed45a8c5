"""Small protobuf conversions both servers need."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(micros: int) -> Timestamp:
    """A Timestamp from microseconds since the Unix epoch."""
    seconds, remainder = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=remainder * 1000)


def optional_timestamp(micros: int) -> Timestamp | None:
    """None (field left unset) for 0, which the read models use for "not yet"."""
    return timestamp(micros) if micros else None
