"""The event store as one SQLite file (schema in migrations/event_store/).

Only this module and the other storage modules speak SQL. The writer holds an exclusive lock file,
so it can keep the head position in memory; readers open the file read-only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventcore.codec import EventCodec
from eventcore.errors import ConcurrencyConflict, Unavailable
from eventcore.event_store import (
    AppendOutcome,
    DuplicateCommand,
    EventLogReader,
    EventStore,
    StorageFailure,
)
from eventcore.events import CommandRecord, PendingAppend, RecordedEvent
from eventcore.sqlite_support import (
    Synchronous,
    WriterLock,
    latest_version,
    migrate,
    open_for_writing,
    open_read_only,
    schema_version,
)

log = logging.getLogger(__name__)

SCHEMA = "event_store"
_COLUMNS = "position, stream_id, stream_version, type, schema_version, payload, metadata"


def format_timestamp(micros: int) -> str:
    """ISO-8601 UTC with microseconds, as stored in event metadata."""
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _TimestampParser:
    """Parses metadata timestamps, remembering the last one (events of one commit share it)."""

    __slots__ = ("_last_text", "_last_value")

    def __init__(self) -> None:
        self._last_text = ""
        self._last_value = 0

    def __call__(self, text: str) -> int:
        if text != self._last_text:
            moment = datetime.fromisoformat(text)
            self._last_value = (
                int(moment.replace(tzinfo=UTC).timestamp()) * 1_000_000 + moment.microsecond
            )
            self._last_text = text
        return self._last_value


class SQLiteEventLogReader(EventLogReader):
    """Reads the log through any connection; opened read-only by default."""

    def __init__(self, connection: sqlite3.Connection, codec: EventCodec) -> None:
        self._connection = connection
        self._codec = codec
        self._loads = json.JSONDecoder().decode
        self._parse_time = _TimestampParser()

    @classmethod
    def open(cls, path: str | Path, codec: EventCodec) -> SQLiteEventLogReader:
        """Open read-only; FileNotFoundError until the writer has created the file's schema."""
        if not Path(path).exists():
            raise FileNotFoundError(f"event store {path} does not exist yet")
        connection = open_read_only(path)
        if schema_version(connection) < latest_version(SCHEMA):
            connection.close()
            raise FileNotFoundError(f"event store {path} is not initialised yet")
        return cls(connection, codec)

    def head_position(self) -> int:
        try:
            row = self._connection.execute("SELECT max(position) FROM events").fetchone()
        except sqlite3.Error as error:
            raise Unavailable(f"event store unavailable: {error}") from error
        return int(row[0] or 0)

    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        rows = self._connection.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        ).fetchall()
        return [self._decode(row) for row in rows]

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        rows = self._connection.execute(
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? ORDER BY stream_version", (stream_id,)
        ).fetchall()
        return [self._decode(row) for row in rows]

    def find_command(self, command_id: str) -> CommandRecord | None:
        row = self._connection.execute(
            "SELECT command_id, fingerprint, stream_id, first_position, last_position"
            " FROM commands WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        return CommandRecord(*row) if row else None

    def close(self) -> None:
        self._connection.close()

    def _decode(self, row: tuple[Any, ...]) -> RecordedEvent:
        position, stream_id, stream_version, type_name, schema_version, payload, metadata = row
        meta = self._loads(metadata)
        return RecordedEvent(
            position,
            stream_id,
            stream_version,
            type_name,
            self._codec.decode(type_name, schema_version, payload),
            meta["event_id"],
            meta["command_id"],
            self._parse_time(meta["recorded_at"]),
        )


class SQLiteEventStore(SQLiteEventLogReader, EventStore):
    """The single writer of an event-store file."""

    def __init__(
        self, connection: sqlite3.Connection, codec: EventCodec, lock: WriterLock | None = None
    ) -> None:
        super().__init__(connection, codec)
        self._lock = lock
        self._head = super().head_position()
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    @classmethod
    def open(  # type: ignore[override]
        cls, path: str | Path, codec: EventCodec, synchronous: Synchronous = Synchronous.FULL
    ) -> SQLiteEventStore:
        """Create or upgrade the file and take the writer lock."""
        lock = WriterLock.acquire(path)
        try:
            connection = open_for_writing(path, synchronous)
            migrate(connection, SCHEMA)
        except BaseException:
            lock.release()
            raise
        return cls(connection, codec, lock)

    def head_position(self) -> int:
        return self._head

    def append_batch(self, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        connection = self._connection
        outcomes: list[AppendOutcome] = []
        event_rows: list[tuple[Any, ...]] = []
        command_rows: list[tuple[str, str, str, int, int]] = []
        stream_heads: dict[str, int] = {}
        commands_in_batch: dict[str, CommandRecord] = {}
        now_us = time.time_ns() // 1000
        recorded_at = format_timestamp(now_us)
        position = self._head
        encode = self._codec.encode
        dumps = self._dumps
        try:
            connection.execute("BEGIN IMMEDIATE")
            for pending in appends:
                stream_id = pending.stream_id
                current = stream_heads.get(stream_id)
                if current is None:
                    current = self._stored_stream_version(stream_id)
                if current != pending.expected_version:
                    outcomes.append(ConcurrencyConflict(stream_id, pending.expected_version, current))
                    continue
                command_id = pending.command_id
                if command_id:
                    earlier = commands_in_batch.get(command_id) or self.find_command(command_id)
                    if earlier is not None:
                        outcomes.append(DuplicateCommand(earlier))
                        continue
                recorded: list[RecordedEvent] = []
                version = current
                for event in pending.events:
                    position += 1
                    version += 1
                    type_name, schema_version, payload = encode(event)
                    event_id = str(uuid.uuid4())
                    metadata = dumps(
                        {"event_id": event_id, "command_id": command_id, "recorded_at": recorded_at}
                    )
                    event_rows.append(
                        (position, stream_id, version, type_name, schema_version, payload, metadata)
                    )
                    recorded.append(
                        RecordedEvent(
                            position, stream_id, version, type_name, event, event_id, command_id, now_us
                        )
                    )
                stream_heads[stream_id] = version
                if command_id and recorded:
                    record = CommandRecord(
                        command_id, pending.fingerprint, stream_id, recorded[0].position, position
                    )
                    commands_in_batch[command_id] = record
                    command_rows.append(
                        (command_id, pending.fingerprint, stream_id, record.first_position, position)
                    )
                outcomes.append(recorded)
            if event_rows:
                connection.executemany(
                    f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", event_rows
                )
            if command_rows:
                connection.executemany(
                    "INSERT INTO commands (command_id, fingerprint, stream_id, first_position,"
                    " last_position) VALUES (?, ?, ?, ?, ?)",
                    command_rows,
                )
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            log.error("event store append failed, batch of %d rolled back: %s", len(appends), error)
            raise StorageFailure(f"event store unavailable: {error}") from error
        except BaseException:
            self._rollback()
            raise
        self._head = position
        return outcomes

    def close(self) -> None:
        super().close()
        if self._lock is not None:
            self._lock.release()

    def _rollback(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def _stored_stream_version(self, stream_id: str) -> int:
        row = self._connection.execute(
            "SELECT max(stream_version) FROM events WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        return int(row[0] or 0)
