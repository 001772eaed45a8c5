"""Times as SQLite files store them: ISO-8601 UTC text with microseconds; in memory: integer
microseconds since the Unix epoch. Integer arithmetic throughout, so a round trip is exact."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(micros: int) -> str:
    seconds, remainder = divmod(micros, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=remainder)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> int:
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(moment.replace(microsecond=0).timestamp()) * 1_000_000 + moment.microsecond


class LastTimestampParser:
    """parse_timestamp that remembers the last text: the events of one commit share their time."""

    __slots__ = ("_last_text", "_last_value")

    def __init__(self) -> None:
        self._last_text = ""
        self._last_value = 0

    def __call__(self, text: str) -> int:
        if text != self._last_text:
            self._last_value = parse_timestamp(text)
            self._last_text = text
        return self._last_value
