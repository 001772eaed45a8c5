"""The event store as one SQLite file (schema in migrations/event_store/).

Only this module and the other storage modules speak SQL. The writer holds an exclusive lock file,
so it can keep the head position in memory; readers open the file read-only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventcore.codec import EventCodec
from eventcore.errors import ConcurrencyConflict, Unavailable
from eventcore.event_store import (
    AppendOutcome,
    DuplicateCommand,
    EventFilter,
    EventLogReader,
    EventStore,
    StorageFailure,
)
from eventcore.events import CommandRecord, PendingAppend, RecordedEvent
from eventcore.json_text import json_dumps
from eventcore.sqlite.files import Synchronous, WriterSession, open_locked_writer, open_migrated_reader
from eventcore.timestamps import LastTimestampParser, format_timestamp

log = logging.getLogger(__name__)

SCHEMA = "event_store"
_COLUMNS = "position, stream_id, stream_version, type, schema_version, payload, metadata"
# Reads take the metadata apart in SQLite's C JSON code rather than in Python.
_READ_COLUMNS = (
    "position, stream_id, stream_version, type, schema_version, payload,"
    " metadata ->> '$.event_id', metadata ->> '$.command_id', metadata ->> '$.recorded_at'"
)


def _uuid4(hex32: str) -> str:
    """A random (version 4) UUID string from 32 random hex digits: cheaper than uuid.uuid4()."""
    variant = "89ab"[int(hex32[16], 16) & 3]
    return f"{hex32[:8]}-{hex32[8:12]}-4{hex32[13:16]}-{variant}{hex32[17:20]}-{hex32[20:]}"


class SQLiteEventLogReader(EventLogReader):
    """Reads the log through any connection; opened read-only by default."""

    def __init__(self, connection: sqlite3.Connection, codec: EventCodec) -> None:
        self._connection = connection
        self._codec = codec
        self._parse_time = LastTimestampParser()

    @classmethod
    def open(cls, path: str | Path, codec: EventCodec) -> SQLiteEventLogReader:
        """Open read-only; FileNotFoundError until the writer has created the file's schema."""
        return cls(open_migrated_reader(path, SCHEMA, "event store"), codec)

    def head_position(self) -> int:
        try:
            row = self._connection.execute("SELECT max(position) FROM events").fetchone()
        except sqlite3.Error as error:
            raise Unavailable(f"event store unavailable: {error}") from error
        return int(row[0] or 0)

    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        return self._select(
            f"SELECT {_READ_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        )

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        rows = self._connection.execute(
            f"SELECT {_READ_COLUMNS} FROM events WHERE stream_id = ? ORDER BY stream_version",
            (stream_id,),
        ).fetchall()
        return [self._decode(row) for row in rows]

    def read_filtered(
        self, after_position: int, up_to_position: int, event_filter: EventFilter, limit: int
    ) -> list[RecordedEvent]:
        """The filter runs in SQLite, over the primary key's range: hidden events are never decoded."""
        sql = f"SELECT {_READ_COLUMNS} FROM events WHERE position > ? AND position <= ?"
        args: list[Any] = [after_position, up_to_position]
        if event_filter.event_types:
            sql += f" AND type IN ({', '.join('?' * len(event_filter.event_types))})"
            args += sorted(event_filter.event_types)
        if event_filter.stream_prefix:
            sql += " AND substr(stream_id, 1, ?) = ?"
            args += [len(event_filter.stream_prefix), event_filter.stream_prefix]
        return self._select(sql + " ORDER BY position LIMIT ?", (*args, limit))

    def read_stream_slice(self, stream_id: str, from_version: int, limit: int) -> list[RecordedEvent]:
        return self._select(
            f"SELECT {_READ_COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ?"
            " ORDER BY stream_version LIMIT ?",
            (stream_id, from_version, limit),
        )

    def stream_version(self, stream_id: str) -> int:
        try:
            row = self._connection.execute(
                "SELECT max(stream_version) FROM events WHERE stream_id = ?", (stream_id,)
            ).fetchone()
        except sqlite3.Error as error:
            raise Unavailable(f"event store unavailable: {error}") from error
        return int(row[0] or 0)

    def _select(self, sql: str, args: Sequence[Any]) -> list[RecordedEvent]:
        try:
            rows = self._connection.execute(sql, args).fetchall()
        except sqlite3.Error as error:
            raise Unavailable(f"event store unavailable: {error}") from error
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
        position, stream_id, stream_version, type_name, schema_version, payload, event_id, command, at = row
        return RecordedEvent(
            position,
            stream_id,
            stream_version,
            type_name,
            self._codec.decode(type_name, schema_version, payload),
            event_id,
            command,
            self._parse_time(at),
        )


class SQLiteEventStore(SQLiteEventLogReader, EventStore):
    """The single writer of an event-store file."""

    def __init__(
        self, connection: sqlite3.Connection, codec: EventCodec, session: WriterSession | None = None
    ) -> None:
        super().__init__(connection, codec)
        self._session = session
        self._head = super().head_position()
        self._dumps = json_dumps

    @classmethod
    def open(
        cls, path: str | Path, codec: EventCodec, synchronous: Synchronous = Synchronous.FULL
    ) -> SQLiteEventStore:
        """Create or upgrade the file and take the writer lock."""
        connection, session = open_locked_writer(path, SCHEMA, synchronous)
        return cls(connection, codec, session)

    def head_position(self) -> int:
        return self._head

    def append_batch(self, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        """Fast path: insert everything as the authors expect it; the schema's unique keys and
        triggers refuse a wrong expectation, and only then is the batch redone append by append
        to tell which one was refused."""
        try:
            return self._append(appends, checked=False)
        except sqlite3.IntegrityError:
            return self._append(appends, checked=True)

    def _append(self, appends: Sequence[PendingAppend], *, checked: bool) -> list[AppendOutcome]:
        connection = self._connection
        outcomes: list[AppendOutcome] = []
        event_rows: list[tuple[Any, ...]] = []
        command_rows: list[tuple[str, str, str, int, int]] = []
        stream_heads: dict[str, int] = {}
        commands_in_batch: dict[str, CommandRecord] = {}
        refused: set[str] = set()  # streams with a refused append in this batch
        now_us = time.time_ns() // 1000
        recorded_at = format_timestamp(now_us)
        position = self._head
        encode = self._codec.encode
        dumps = self._dumps
        random_hex = os.urandom(16 * sum(len(a.events) for a in appends)).hex()
        try:
            connection.execute("BEGIN IMMEDIATE")
            for pending in appends:
                stream_id = pending.stream_id
                command_id = pending.command_id
                if checked:
                    refusal = self._refusal(pending, stream_heads, commands_in_batch)
                    if refusal is None and stream_id in refused:  # decided on a refused append
                        refusal = ConcurrencyConflict(
                            stream_id, pending.expected_version, stream_heads.get(stream_id, 0)
                        )
                    if refusal is not None:
                        outcomes.append(refusal)
                        refused.add(stream_id)
                        continue
                metadata_tail = f'","command_id":{dumps(command_id)},"recorded_at":"{recorded_at}"}}'
                recorded: list[RecordedEvent] = []
                version = pending.expected_version
                for event in pending.events:
                    offset = (position - self._head) * 32
                    position += 1
                    version += 1
                    type_name, schema_version, payload = encode(event)
                    event_id = _uuid4(random_hex[offset : offset + 32])
                    event_rows.append(
                        (
                            position,
                            stream_id,
                            version,
                            type_name,
                            schema_version,
                            payload,
                            '{"event_id":"' + event_id + metadata_tail,
                        )
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
        except sqlite3.IntegrityError:
            self._rollback()
            if checked:  # every expectation was checked: this is not a conflict but a damaged file
                raise StorageFailure("event store refused a checked append") from None
            raise
        except sqlite3.Error as error:
            self._rollback()
            log.error("event store append failed, batch of %d rolled back: %s", len(appends), error)
            raise StorageFailure(f"event store unavailable: {error}") from error
        except BaseException:
            self._rollback()
            raise
        self._head = position
        if self._session is not None and event_rows:
            self._session.announce()
        return outcomes

    def _refusal(
        self,
        pending: PendingAppend,
        stream_heads: dict[str, int],
        commands_in_batch: dict[str, CommandRecord],
    ) -> ConcurrencyConflict | DuplicateCommand | None:
        """Why an append cannot go in as its author expects, or None if it can.

        A recorded command_id comes first: a retry is a duplicate, whatever its stream did since.
        """
        if pending.command_id:
            earlier = commands_in_batch.get(pending.command_id) or self.find_command(pending.command_id)
            if earlier is not None:
                return DuplicateCommand(earlier)
        current = stream_heads.get(pending.stream_id)
        if current is None:
            current = self._stored_stream_version(pending.stream_id)
        if current != pending.expected_version:
            return ConcurrencyConflict(pending.stream_id, pending.expected_version, current)
        return None

    def close(self) -> None:
        super().close()
        if self._session is not None:
            self._session.release()

    def _rollback(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def _stored_stream_version(self, stream_id: str) -> int:
        row = self._connection.execute(
            "SELECT max(stream_version) FROM events WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        return int(row[0] or 0)
