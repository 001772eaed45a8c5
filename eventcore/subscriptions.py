"""Catch-up subscriptions to the log, as EventStoreDB offers them.

A subscription sends every stored event after `from_position` that passes its filter, in position
order, read from the store in pages; once it has reached the live feed's window it reads from the
window (one read of the log shared by every subscriber), and says `caught_up` when it has sent
everything the feed has seen. While the filter hides events it sends a `checkpoint` at least every
`checkpoint_interval` seconds, so a consumer can save its place; resuming from the last position it
saw (an event's or a marker's) gives every later event exactly once, because positions are
gap-free and in commit order.

A consumer that reads more slowly than the log grows is left behind by the window: it gets
`fell_behind`, is served from the store again, and gets `caught_up` once it is back. What a
subscription holds is one page of events, whatever the consumer does.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from eventcore.errors import FieldViolation, InvalidArgument, OutOfRange
from eventcore.event_store import EventFilter, EventLogReader
from eventcore.events import RecordedEvent
from eventcore.live import LiveFeed

MAX_NAME_LENGTH = 256  # stream ids, stream prefixes and event type names
MAX_EVENT_TYPES = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MarkerKind(Enum):
    CHECKPOINT = "checkpoint"  # scanned up to position; events were hidden by the filter
    CAUGHT_UP = "caught_up"  # every stored event up to position was sent; live ones follow
    FELL_BEHIND = "fell_behind"  # too slow for the live window: served from the store again


class Marker(NamedTuple):
    kind: MarkerKind
    position: int


SubscriptionMessage = RecordedEvent | Marker


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    page_size: int = 500  # events read from the store at a time
    scan_window: int = 20_000  # positions one filtered store read looks at, at most
    checkpoint_interval: float = 1.0  # seconds between checkpoints while the filter hides events
    safety_look: float = 1.0  # longest wait for the live feed before looking again


def _check_name(field: str, value: str, violations: list[FieldViolation], *, required: bool) -> None:
    if not value:
        if required:
            violations.append(FieldViolation(field, "must not be empty"))
    elif len(value) > MAX_NAME_LENGTH:
        violations.append(FieldViolation(field, f"must be at most {MAX_NAME_LENGTH} characters"))
    elif _CONTROL.search(value):
        violations.append(FieldViolation(field, "must not contain control characters"))


def event_filter(event_types: Sequence[str], stream_prefix: str) -> EventFilter:
    """The filter of a subscription request; InvalidArgument names each malformed field."""
    violations: list[FieldViolation] = []
    if len(event_types) > MAX_EVENT_TYPES:
        violations.append(FieldViolation("event_types", f"must name at most {MAX_EVENT_TYPES} types"))
    else:
        for index, name in enumerate(event_types):
            _check_name(f"event_types[{index}]", name, violations, required=True)
    _check_name("stream_prefix", stream_prefix, violations, required=False)
    if violations:
        raise InvalidArgument(violations[:20])
    return EventFilter(frozenset(event_types), stream_prefix)


def check_stream_id(stream_id: str) -> None:
    violations: list[FieldViolation] = []
    _check_name("stream_id", stream_id, violations, required=True)
    if violations:
        raise InvalidArgument(violations)


class Subscriptions:
    """Serves subscriptions from a log reader and the process's live feed."""

    def __init__(
        self,
        reader: Callable[[], EventLogReader],
        feed: LiveFeed,
        settings: SubscriptionSettings | None = None,
    ) -> None:
        self._reader = reader
        self._feed = feed
        self._settings = settings or SubscriptionSettings()

    async def subscribe(self, from_position: int, passes: EventFilter) -> AsyncIterator[SubscriptionMessage]:
        """The subscription's messages, until the consumer stops iterating.

        Raises OutOfRange (before any message) for a from_position beyond the head, and what
        reading the store raises (e.g. Unavailable).
        """
        head = self._reader().head_position()
        if from_position > head:
            raise OutOfRange(f"from_position {from_position} is beyond the event store's head {head}")
        feed = self._feed
        feed.attach()
        try:
            async for message in self._messages(from_position, passes):
                yield message
        finally:
            feed.detach()

    async def _messages(self, position: int, passes: EventFilter) -> AsyncIterator[SubscriptionMessage]:
        settings, feed = self._settings, self._feed
        reported, reported_at = position, time.monotonic()  # what the consumer was last told, when
        live = caught_up = False
        while True:
            feed.check()
            if not live:
                if feed.reaches_back_to(position):
                    live, caught_up = True, False
                    continue
                reader = self._reader()
                target = min(position + settings.scan_window, reader.head_position())
                page = reader.read_filtered(position, target, passes, settings.page_size)
                batch: Sequence[RecordedEvent] = page
                scanned = page[-1].position if len(page) == settings.page_size else target
            else:
                window = feed.events_after(position, settings.page_size)
                if window is None:
                    yield Marker(MarkerKind.FELL_BEHIND, position)
                    reported, reported_at, live = position, time.monotonic(), False
                    continue
                if not window:
                    if not caught_up:
                        yield Marker(MarkerKind.CAUGHT_UP, position)
                        reported, reported_at, caught_up = position, time.monotonic(), True
                    timeout = settings.safety_look
                    if position > reported:  # hidden events: the next checkpoint is due at
                        timeout = max(reported_at + settings.checkpoint_interval - time.monotonic(), 0.0)
                    if await feed.wait_beyond(position, timeout):
                        continue
                    batch, scanned = (), position
                else:
                    batch = window if passes.passes_all else [e for e in window if passes.passes(e)]
                    scanned = window[-1].position
            for event in batch:
                yield event
            if batch:
                reported, reported_at = batch[-1].position, time.monotonic()
            else:
                await asyncio.sleep(0)  # a filter hiding page after page must not hold the loop
            position = scanned
            if position > reported and time.monotonic() - reported_at >= settings.checkpoint_interval:
                yield Marker(MarkerKind.CHECKPOINT, position)
                reported, reported_at = position, time.monotonic()
