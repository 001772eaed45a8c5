"""The event-store interfaces: a reader anyone may hold, and the single writer's append.

Global positions run 1, 2, 3, ... gap-free in commit order. An append carries the stream version
its author saw; the store refuses it when the stream has moved (optimistic concurrency). A batch of
appends from many commands is committed in one durable transaction (group commit), but each append
succeeds or fails on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from eventcore.errors import ConcurrencyConflict
from eventcore.events import CommandRecord, PendingAppend, RecordedEvent


class DuplicateCommand(Exception):
    """The append's command_id is recorded already; `record` says what it appended then."""

    def __init__(self, record: CommandRecord) -> None:
        self.record = record
        super().__init__(f"command {record.command_id!r} was appended already")


class StorageFailure(Exception):
    """The store could not commit (disk full, I/O error, file gone); nothing of the batch is kept."""


AppendOutcome = list[RecordedEvent] | ConcurrencyConflict | DuplicateCommand


class EventFilter(NamedTuple):
    """Which events a reader wants: empty parts pass everything."""

    event_types: frozenset[str] = frozenset()
    stream_prefix: str = ""

    @property
    def passes_all(self) -> bool:
        return not self.event_types and not self.stream_prefix

    def passes(self, event: RecordedEvent) -> bool:
        return (not self.event_types or event.type in self.event_types) and event.stream_id.startswith(
            self.stream_prefix
        )


class EventLogReader(ABC):
    """Read access to the log: what the projector and the read side need, and the writer too."""

    @abstractmethod
    def head_position(self) -> int:
        """Position of the last committed event (0 for an empty log)."""

    @abstractmethod
    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """Up to `limit` events with position > after_position, in position order."""

    @abstractmethod
    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        """All events of one stream in stream-version order (empty for an unknown stream)."""

    @abstractmethod
    def find_command(self, command_id: str) -> CommandRecord | None:
        """The record of an appended command, if that command_id was used."""

    def read_filtered(
        self, after_position: int, up_to_position: int, event_filter: EventFilter, limit: int
    ) -> list[RecordedEvent]:
        """Up to `limit` events with after_position < position <= up_to_position that pass the
        filter, in position order. Stores that can filter where the events are override this."""
        found: list[RecordedEvent] = []
        position = after_position
        while position < up_to_position and len(found) < limit:
            page = self.read_all(position, min(up_to_position - position, 1000))
            if not page:
                break
            for event in page:
                if event.position > up_to_position:
                    break
                if event_filter.passes(event):
                    found.append(event)
                    if len(found) == limit:
                        break
            position = page[-1].position
        return found

    def read_stream_slice(self, stream_id: str, from_version: int, limit: int) -> list[RecordedEvent]:
        """Up to `limit` events of one stream from stream version `from_version` on."""
        return [e for e in self.read_stream(stream_id) if e.stream_version >= from_version][:limit]

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 for a stream with no events)."""
        return len(self.read_stream(stream_id))

    def read_command_events(self, record: CommandRecord) -> list[RecordedEvent]:
        """The events an earlier command appended (to replay its reply)."""
        count = record.last_position - record.first_position + 1
        return self.read_all(record.first_position - 1, count)

    def close(self) -> None:
        """Release the underlying resources; the default holds none."""


class EventStore(EventLogReader):
    """The writer: one process per store."""

    @abstractmethod
    def append_batch(self, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        """Append every acceptable append in one durable transaction.

        Returns one outcome per append, in order: its recorded events, or why it was refused.
        Raises StorageFailure when the transaction as a whole could not be committed.
        """

    def append(self, pending: PendingAppend) -> list[RecordedEvent]:
        """Append one command's events; raises its refusal."""
        outcome = self.append_batch([pending])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
