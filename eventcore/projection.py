"""Projections and the runner that keeps them up to date.

A projection is a map from domain event class to a small function that changes documents through a
unit of work. The runner reads the log in batches and applies each batch to every projection in one
transaction together with that projection's new checkpoint, so an event is applied exactly once
even across crashes and replays: an event at or below a projection's checkpoint is skipped.

Projections are tolerant and isolated. An event is decoded only when a projection handles its type
(the log reader is given a deferred codec); a type no projection knows is passed over and counted.
A handler that raises parks its stream for that projection only: the batch is rolled back and
applied again with that stream waiting, so no half-applied event is ever committed, and the park is
recorded with the checkpoint that passes it. More than `max_parked` parked streams stop the whole
projection (it failed); the others go on. Nothing a handler does can stop the runner or make it
retry the same batch forever.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Collection as Container
from dataclasses import dataclass
from typing import Any

from eventcore.codec import Undecoded
from eventcore.errors import Unavailable
from eventcore.event_store import EventLogReader
from eventcore.events import RecordedEvent
from eventcore.read_store import (
    WHOLE_PROJECTION,
    Collection,
    ParkedStream,
    ReadStoreWriter,
    UnitOfWork,
)

log = logging.getLogger(__name__)

EventHandler = Callable[[UnitOfWork, RecordedEvent], None]
# Given the (decoded) events a batch is about to apply, load what their handlers will read
# (`work.prefetch`), so a batch costs a few queries rather than one or two per event.
Prefetch = Callable[[UnitOfWork, Sequence[RecordedEvent]], None]
DEFAULT_MAX_PARKED = 100
_MAX_ERROR = 500  # characters of an error message kept with a park


@dataclass(frozen=True)
class Projection:
    """name and version identify the read model; a new version rebuilds it from position 0."""

    name: str
    version: int
    collections: tuple[Collection, ...]
    handlers: Mapping[type[Any], EventHandler]
    prefetch: Prefetch | None = None

    def handles(self, event_type: type[Any]) -> bool:
        return event_type in self.handlers

    def handler_for(self, event: RecordedEvent) -> EventHandler | None:
        data = event.data
        return self.handlers.get(data.event_class if type(data) is Undecoded else type(data))


class HandlerFailed(Exception):
    """A projection's handler (or the decoding it needed) raised on one event."""

    def __init__(self, parked: ParkedStream) -> None:
        self.parked = parked
        super().__init__(parked.error)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def decoded(event: RecordedEvent) -> RecordedEvent:
    """The event with its data decoded (as it is, when the reader decoded it already)."""
    data = event.data
    if type(data) is not Undecoded:
        return event
    position, stream_id, stream_version, type_name, _, event_id, command_id, at = event
    return RecordedEvent(
        position, stream_id, stream_version, type_name, data.decode(), event_id, command_id, at
    )


def apply_event(
    projection: Projection,
    work: UnitOfWork,
    event: RecordedEvent,
    cache: dict[int, RecordedEvent] | None = None,
) -> None:
    """Apply one event to one projection; raises HandlerFailed when decoding or the handler fails.

    `cache` keeps decoded events by position, so projections sharing a batch decode each once.
    Unavailable (storage trouble) passes through: it is not the event's fault.
    """
    data = event.data
    handler = projection.handlers.get(data.event_class if type(data) is Undecoded else type(data))
    if handler is not None:
        run_handler(projection, handler, work, event, cache)


def run_handler(
    projection: Projection,
    handler: EventHandler,
    work: UnitOfWork,
    event: RecordedEvent,
    cache: dict[int, RecordedEvent] | None,
) -> None:
    try:
        if type(event.data) is Undecoded:
            ready = cache.get(event.position) if cache is not None else None
            if ready is None:
                ready = decoded(event)
                if cache is not None:
                    cache[event.position] = ready
            event = ready
        handler(work, event)
    except Unavailable:
        raise
    except Exception as error:
        raise HandlerFailed(
            ParkedStream(projection.name, event.stream_id, event.position, event.type, describe(error))
        ) from error


def over_limit(name: str, parked: ParkedStream, max_parked: int) -> ParkedStream:
    """The park that stops a whole projection once it has more than max_parked streams parked."""
    return ParkedStream(
        name,
        WHOLE_PROJECTION,
        parked.position,
        parked.event_type,
        f"more than {max_parked} streams parked; the last, {parked.stream_id}: {parked.error}",
    )


def failed_projections(parked: Mapping[tuple[str, str], ParkedStream]) -> set[str]:
    """The projections stopped as a whole, from parks keyed by (projection, stream_id)."""
    return {name for name, stream in parked if stream == WHOLE_PROJECTION}


class ProjectionRunner:
    def __init__(
        self,
        log_reader: EventLogReader,
        store: ReadStoreWriter,
        projections: Sequence[Projection],
        batch_size: int = 1000,
        max_parked: int = DEFAULT_MAX_PARKED,
        skipped: Container[tuple[str, int]] = (),
        report_unhandled: bool = True,
    ) -> None:
        """`skipped` holds (projection, position) pairs passed over on purpose (see verify);
        `report_unhandled` logs each event type no projection of this runner handles, once."""
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self._log = log_reader
        self._store = store
        self._projections = list(projections)
        self._batch_size = batch_size
        self._max_parked = max_parked
        self._skipped = skipped
        self._positions: dict[str, int] = {}
        self._failed: set[str] = set()
        self._reported: set[tuple[str, str, int]] = set()
        self._handled = {cls for p in projections for cls in p.handlers}
        self._report_unhandled = report_unhandled
        self.unhandled_types: Counter[str] = Counter()  # events of types no projection handles

    def prepare(self) -> None:
        """Create missing read models and rebuild those whose version changed."""
        stored = self._store.checkpoints()
        for projection in self._projections:
            checkpoint = stored.get(projection.name)
            if checkpoint is None or checkpoint.version != projection.version:
                if checkpoint is not None:
                    log.info(
                        "projection %s changed from version %d to %d: rebuilding from position 0",
                        projection.name,
                        checkpoint.version,
                        projection.version,
                    )
                self._store.reset(projection.name, projection.version, projection.collections)
                self._positions[projection.name] = 0
            else:
                self._positions[projection.name] = checkpoint.position
        self._failed = failed_projections(self._store.parked_streams())

    @property
    def positions(self) -> dict[str, int]:
        return dict(self._positions)

    @property
    def log_reader(self) -> EventLogReader:
        return self._log

    @property
    def store(self) -> ReadStoreWriter:
        return self._store

    def run_once(self, until: int | None = None) -> int:
        """Apply the next batch of events (none beyond `until`); returns how many new events it
        held (0 when idle, or when every projection failed)."""
        if len(self._positions) != len(self._projections):
            self.prepare()
        elif self._failed:  # an operator may have retried it meanwhile (only _apply fails one)
            self._failed = failed_projections(self._store.parked_streams())
        going = [self._positions[p.name] for p in self._projections if p.name not in self._failed]
        if not going:
            return 0
        start = min(going)
        limit = self._batch_size if until is None else min(self._batch_size, until - start)
        events = self._log.read_all(start, limit) if limit > 0 else []
        if not events:
            return 0
        found: dict[tuple[str, str], ParkedStream] = {}
        cache: dict[int, RecordedEvent] = {}  # decoded events, shared by the projections
        while True:
            try:
                applied = self._apply(events, found, cache)
                break
            except HandlerFailed as failure:  # rolled back: apply again with that stream parked
                self._park(failure.parked, found)
        self._positions.update(applied)
        self._count_unhandled(events, start)
        return sum(1 for event in events if event.position > start)

    def run_until_idle(self, until: int | None = None) -> int:
        """Apply batches until the log has nothing new; returns the number of events read."""
        total = 0
        while count := self.run_once(until):
            total += count
        return total

    def _apply(
        self,
        events: list[RecordedEvent],
        found: dict[tuple[str, str], ParkedStream],
        cache: dict[int, RecordedEvent],
    ) -> dict[str, int]:
        applied: dict[str, int] = {}
        with self._store.transaction() as work:
            # The checkpoints and parks stored with the rows are the authority: an event at or
            # below a checkpoint is never applied again, whatever this runner remembers.
            stored = self._store.checkpoints()
            parked = {**self._store.parked_streams(), **found}
            self._failed = failed_projections(parked)
            for projection in self._projections:
                name = projection.name
                checkpoint = stored.get(name)
                done = max(self._positions[name], checkpoint.position if checkpoint else 0)
                whole = parked.get((name, WHOLE_PROJECTION))
                stop_at = whole.position if whole is not None else None
                waiting = {s for p, s in parked if p == name}
                skipped = self._skipped
                handlers = projection.handlers
                due: list[tuple[EventHandler, RecordedEvent]] = []
                for event in events:
                    position = event.position
                    if position <= done:
                        continue
                    if stop_at is not None and position >= stop_at:
                        break
                    data = event.data
                    handler = handlers.get(data.event_class if type(data) is Undecoded else type(data))
                    if (
                        handler is not None
                        and not (waiting and event.stream_id in waiting)
                        and not (skipped and (name, position) in skipped)
                    ):
                        due.append((handler, event))
                    done = position
                if projection.prefetch is not None and due:
                    self._prefetch(projection, projection.prefetch, work, due, cache)
                for handler, event in due:
                    run_handler(projection, handler, work, event, cache)
                work.set_checkpoint(name, projection.version, done)
                applied[name] = done
            for park in found.values():
                work.park(park)
        return applied

    def _prefetch(
        self,
        projection: Projection,
        prefetch: Prefetch,
        work: UnitOfWork,
        due: list[tuple[EventHandler, RecordedEvent]],
        cache: dict[int, RecordedEvent],
    ) -> None:
        """The projection's prefetch over the events it is about to apply, decoded once (shared with
        the handlers through `cache`). It is only a hint: an event that cannot be decoded is left to
        its handler's run, which parks its stream, and a prefetch that fails is logged and the
        handlers load what they need themselves, so it can neither park nor stop anything."""
        ready = []
        for _, event in due:
            if type(event.data) is Undecoded:
                known = cache.get(event.position)
                if known is None:
                    try:
                        known = cache[event.position] = decoded(event)
                    except Exception:  # reported by run_handler, with the stream parked
                        continue
                event = known
            ready.append(event)
        try:
            prefetch(work, ready)
        except Unavailable:
            raise
        except Exception as error:
            if (projection.name, "prefetch", 0) not in self._reported:
                self._reported.add((projection.name, "prefetch", 0))
                log.warning("projection %s: prefetch failed, handlers load one by one: %s",
                            projection.name, describe(error))  # fmt: skip

    def _park(self, parked: ParkedStream, found: dict[tuple[str, str], ParkedStream]) -> None:
        name = parked.projection
        stored = self._store.parked_streams()
        count = len({s for p, s in [*stored, *found] if p == name and s != WHOLE_PROJECTION})
        if count >= self._max_parked:
            parked = over_limit(name, parked, self._max_parked)
            log.error(
                "projection %s failed and stopped at position %d: %s", name, parked.position, parked.error
            )
        elif (name, parked.stream_id, parked.position) not in self._reported:
            log.error(
                "projection %s parked stream %s at position %d (%s): %s",
                name,
                parked.stream_id,
                parked.position,
                parked.event_type,
                parked.error,
            )
        self._reported.add((name, parked.stream_id, parked.position))
        found[(name, parked.stream_id)] = parked

    def _count_unhandled(self, events: list[RecordedEvent], start: int) -> None:
        for event in events:
            data = event.data
            cls = data.event_class if type(data) is Undecoded else type(data)
            if event.position > start and cls not in self._handled:
                if self._report_unhandled and event.type not in self.unhandled_types:
                    log.warning(
                        "event type %s (first at position %d) is handled by no projection: passed over",
                        event.type,
                        event.position,
                    )
                self.unhandled_types[event.type] += 1
