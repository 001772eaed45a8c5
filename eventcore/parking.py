"""Resolving parked streams: apply their waiting events again (`retry`), or drop the failing one on
purpose and apply the rest (`skip`, recorded in the read store).

Each resolution is one transaction that reads the projection's checkpoint and parks as committed,
so it may run beside a live projector: the stream's events up to the checkpoint are applied here,
the later ones by the projector once the park is gone. An event that fails again leaves the stream
parked at that event, with everything before it applied and nothing of it.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from eventcore.event_store import EventLogReader
from eventcore.projection import HandlerFailed, Projection, apply_event
from eventcore.read_store import WHOLE_PROJECTION, ParkedStream, ReadStoreWriter, SkippedEvent

log = logging.getLogger(__name__)


class Resolution(NamedTuple):
    projection: str
    stream_id: str
    applied: int  # events applied
    parked_again: ParkedStream | None  # where the stream waits now, None when it is resolved


class NotParked(LookupError):
    """The named stream is not parked for that projection."""


def parked_for(store: ReadStoreWriter, projection: str, stream_id: str | None) -> list[ParkedStream]:
    """The parks a command addresses: one stream, or every parked stream of the projection."""
    parked = [p for (name, _), p in sorted(store.parked_streams().items()) if name == projection]
    if stream_id is None:
        return parked
    chosen = [p for p in parked if p.stream_id == stream_id]
    if not chosen:
        raise NotParked(f"stream {stream_id!r} is not parked for projection {projection}")
    return chosen


def retry(
    log_reader: EventLogReader, store: ReadStoreWriter, projection: Projection, stream_id: str | None = None
) -> list[Resolution]:
    """Apply the waiting events of one parked stream (or of every one of the projection) again."""
    return [
        _resolve(log_reader, store, projection, parked, skip=False)
        for parked in parked_for(store, projection.name, stream_id)
    ]


def skip(
    log_reader: EventLogReader, store: ReadStoreWriter, projection: Projection, stream_id: str
) -> Resolution:
    """Drop the stream's failing event from the projection (recorded), then apply its later events."""
    (parked,) = parked_for(store, projection.name, stream_id)
    if parked.stream_id == WHOLE_PROJECTION:
        raise NotParked(
            f"projection {projection.name} failed as a whole: retry it, a stream cannot be skipped"
        )
    return _resolve(log_reader, store, projection, parked, skip=True)


def _resolve(
    log_reader: EventLogReader,
    store: ReadStoreWriter,
    projection: Projection,
    parked: ParkedStream,
    *,
    skip: bool,
) -> Resolution:
    name, stream_id = projection.name, parked.stream_id
    if stream_id == WHOLE_PROJECTION:  # the runner resumes it from its checkpoint
        with store.transaction() as work:
            work.unpark(name, stream_id)
        log.info("projection %s resumed from its checkpoint", name)
        return Resolution(name, stream_id, 0, None)
    limit: int | None = None  # apply only the events before this index (after a failure)
    failure: ParkedStream | None = None
    while True:
        try:
            applied = 0
            with store.transaction() as work:
                current = store.parked_streams().get((name, stream_id))
                if current is None:  # resolved meanwhile
                    return Resolution(name, stream_id, 0, None)
                checkpoint = store.checkpoints()[name].position
                # Read only now: while this transaction holds the read store, the projector cannot
                # pass more of the stream's events, and every event up to its checkpoint is in the log.
                first = current.position + (1 if skip else 0)
                events = log_reader.read_stream(stream_id)
                waiting = [e for e in events if first <= e.position <= checkpoint]
                if skip:
                    work.record_skip(SkippedEvent(*current[:5]))
                for event in waiting[:limit]:
                    apply_event(projection, work, event)
                    applied += 1
                if failure is None:
                    work.unpark(name, stream_id)
                else:
                    work.park(failure)
        except HandlerFailed as failed:
            if failure is not None:  # the same events failed differently: leave it parked as it was
                raise
            failure = failed.parked
            limit = next(i for i, e in enumerate(waiting) if e.position == failure.position)
            continue
        break
    if failure is None:
        log.info(
            "projection %s: stream %s %s, %d events applied",
            name,
            stream_id,
            "skipped" if skip else "retried",
            applied,
        )
    else:
        log.error(
            "projection %s: stream %s parked again at position %d: %s",
            name,
            stream_id,
            failure.position,
            failure.error,
        )
    return Resolution(name, stream_id, applied, failure)
