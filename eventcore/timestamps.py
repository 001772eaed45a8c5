"""Times as SQLite files store them: ISO-8601 UTC text with microseconds; in memory: integer
microseconds since the Unix epoch. Integer arithmetic throughout, so a round trip is exact."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(micros: int) -> str:
    seconds, remainder = divmod(micros, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=remainder)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_EPOCH_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> seconds since the epoch at its midnight (UTC)


def parse_timestamp(text: str) -> int:
    """Microseconds since the epoch of stored text; format_timestamp's own shape takes a fast path
    (slices and one cached date per day), which the projector pays for every event it applies."""
    if len(text) == 27 and text[10] == "T" and text[26] == "Z" and text[19] == ".":
        day = _EPOCH_DAYS.get(text[:10])
        if day is None:
            midnight = datetime.fromisoformat(text[:10]).replace(tzinfo=UTC)
            day = int(midnight.timestamp())
            if len(_EPOCH_DAYS) > 1000:
                _EPOCH_DAYS.clear()
            _EPOCH_DAYS[text[:10]] = day
        seconds = day + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
        return seconds * 1_000_000 + int(text[20:26])
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
