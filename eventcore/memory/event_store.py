"""An in-memory event store with the same contract as the SQLite one, for unit tests.

It stores events encoded, exactly as SQLite does, so codec and upcasting behave alike.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from eventcore.codec import EventCodec
from eventcore.errors import ConcurrencyConflict
from eventcore.event_store import AppendOutcome, DuplicateCommand, EventStore
from eventcore.events import CommandRecord, PendingAppend, RecordedEvent


@dataclass(frozen=True, slots=True)
class _StoredEvent:
    position: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    payload: str
    event_id: str
    command_id: str
    recorded_at_us: int


class InMemoryEventStore(EventStore):
    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec
        self._events: list[_StoredEvent] = []
        self._streams: dict[str, list[_StoredEvent]] = {}
        self._commands: dict[str, CommandRecord] = {}
        self._lock = threading.Lock()

    def head_position(self) -> int:
        return len(self._events)

    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        with self._lock:
            stored = self._events[after_position : after_position + limit]
        return [self._decode(event) for event in stored]

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        with self._lock:
            stored = list(self._streams.get(stream_id, ()))
        return [self._decode(event) for event in stored]

    def find_command(self, command_id: str) -> CommandRecord | None:
        return self._commands.get(command_id)

    def append_batch(self, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        now_us = time.time_ns() // 1000
        refused: set[str] = set()  # streams with a refused append: later ones were decided on it
        with self._lock:
            for pending in appends:
                earlier = self._commands.get(pending.command_id) if pending.command_id else None
                if earlier is not None:  # a retry is a duplicate, whatever its stream did since
                    outcomes.append(DuplicateCommand(earlier))
                    refused.add(pending.stream_id)
                    continue
                stream = self._streams.get(pending.stream_id, [])
                if len(stream) != pending.expected_version or pending.stream_id in refused:
                    outcomes.append(
                        ConcurrencyConflict(pending.stream_id, pending.expected_version, len(stream))
                    )
                    refused.add(pending.stream_id)
                    continue
                stored: list[_StoredEvent] = []
                for event in pending.events:
                    type_name, schema_version, payload = self._codec.encode(event)
                    stored.append(
                        _StoredEvent(
                            len(self._events) + len(stored) + 1,
                            pending.stream_id,
                            len(stream) + len(stored) + 1,
                            type_name,
                            schema_version,
                            payload,
                            str(uuid.uuid4()),
                            pending.command_id,
                            now_us,
                        )
                    )
                self._events.extend(stored)
                self._streams.setdefault(pending.stream_id, []).extend(stored)
                if pending.command_id and stored:
                    self._commands[pending.command_id] = CommandRecord(
                        pending.command_id,
                        pending.fingerprint,
                        pending.stream_id,
                        stored[0].position,
                        stored[-1].position,
                    )
                outcomes.append(
                    [
                        RecordedEvent(
                            s.position,
                            s.stream_id,
                            s.stream_version,
                            s.type,
                            event,
                            s.event_id,
                            s.command_id,
                            s.recorded_at_us,
                        )
                        for s, event in zip(stored, pending.events, strict=True)
                    ]
                )
        return outcomes

    def _decode(self, stored: _StoredEvent) -> RecordedEvent:
        return RecordedEvent(
            stored.position,
            stored.stream_id,
            stored.stream_version,
            stored.type,
            self._codec.decode(stored.type, stored.schema_version, stored.payload),
            stored.event_id,
            stored.command_id,
            stored.recorded_at_us,
        )
