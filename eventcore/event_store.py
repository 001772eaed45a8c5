"""The event-store interfaces: a reader anyone may hold, and the single writer's append.

Global positions run 1, 2, 3, ... gap-free in commit order. An append carries the stream version
its author saw; the store refuses it when the stream has moved (optimistic concurrency). A batch of
appends from many commands is committed in one durable transaction (group commit), but each append
succeeds or fails on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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
