"""The event store in PostgreSQL, shared by any number of write services (schema in
migrations/event_store/).

Gap-free, commit-ordered positions with several writers: every append transaction first takes the
transaction-scoped advisory lock APPEND_LOCK (`pg_advisory_xact_lock`: writers queue, readers never
wait), then reads the head, the streams' versions and the command ids under that lock, and commits
positions head+1, head+2, ... before the lock lets the next writer in (PostgreSQL releases a
transaction's locks only once its commit is visible). `LOCK TABLE events IN EXCLUSIVE MODE` would
serialise the same way, but it also queues behind autovacuum's lock on the table, a stall of up to
`deadlock_timeout` (1 s) whenever autovacuum visits the log. A transaction that would take position n+1 cannot
start deciding until the one holding n has committed, so commit order is position order and a
reader tailing `position > p` can never see n+1 before n (sequences, by contrast, hand out numbers
in start order and commit in any order, which is how tailing readers skip events).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

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
from eventcore.postgres.connection import (
    APPEND_LOCK,
    CHANGES_CHANNEL,
    Connection,
    Session,
    describe,
    open_reader,
    open_writer,
    redact,
    translated,
)

log = logging.getLogger(__name__)

SCHEMA = "event_store"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_READ_COLUMNS = (
    "position, stream_id, stream_version, type, schema_version, payload, event_id::text, command_id,"
    " (extract(epoch FROM recorded_at) * 1000000)::bigint"
)

# One index probe per stream and per command id, whatever the planner's statistics say (a plain
# `= ANY(...)` is planned as a scan of the whole table while the table is young and unanalysed).
_STREAM_VERSIONS = (
    "SELECT s.id, (SELECT max(stream_version) FROM events WHERE stream_id = s.id)"
    " FROM unnest(%s::text[]) AS s(id)"
)
_KNOWN_COMMANDS = (
    "SELECT c.command_id, c.fingerprint, c.stream_id, c.first_position, c.last_position"
    " FROM unnest(%s::text[]) AS k(id) CROSS JOIN LATERAL (SELECT * FROM commands"
    " WHERE command_id = k.id LIMIT 1) AS c"
)


class PostgresEventLogReader(EventLogReader):
    """Reads the log; each statement sees every transaction committed before it began."""

    def __init__(self, session: Session, codec: EventCodec) -> None:
        self._session = session
        self._codec = codec

    @classmethod
    def open(cls, url: str, codec: EventCodec) -> PostgresEventLogReader:
        """Open read-only; DatabaseNotReady until a write service has created the schema."""
        session = Session(url, "event store", lambda: open_reader(url, SCHEMA, "event store"))
        return cls(session, codec)

    def _fetch(self, query: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with translated(self._session.url, "event store"):
            return self._session.connection.execute(query, args).fetchall()

    def head_position(self) -> int:
        return int(self._fetch("SELECT coalesce(max(position), 0) FROM events", ())[0][0])

    def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        rows = self._fetch(
            f"SELECT {_READ_COLUMNS} FROM events WHERE position > %s ORDER BY position LIMIT %s",
            (after_position, limit),
        )
        return [self._decode(row) for row in rows]

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        rows = self._fetch(
            f"SELECT {_READ_COLUMNS} FROM events WHERE stream_id = %s ORDER BY stream_version",
            (stream_id,),
        )
        return [self._decode(row) for row in rows]

    def find_command(self, command_id: str) -> CommandRecord | None:
        rows = self._fetch(
            "SELECT command_id, fingerprint, stream_id, first_position, last_position"
            " FROM commands WHERE command_id = %s",
            (command_id,),
        )
        return CommandRecord(*rows[0]) if rows else None

    def close(self) -> None:
        self._session.close()

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
            at,
        )


class PostgresEventStore(PostgresEventLogReader, EventStore):
    """One of possibly several writers of the same event store."""

    def __init__(self, session: Session, codec: EventCodec, synchronous_commit: bool = True) -> None:
        super().__init__(session, codec)
        self._synchronous_commit = synchronous_commit

    @classmethod
    def open(cls, url: str, codec: EventCodec, synchronous_commit: bool = True) -> PostgresEventStore:
        """Create the database and schema if missing. synchronous_commit=False trades the last
        acknowledged commands on a server crash for speed (like SQLite's NORMAL)."""
        session = Session(url, "event store", lambda: open_writer(url, SCHEMA, "event store"))
        return cls(session, codec, synchronous_commit)

    def append_batch(self, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        url = self._session.url
        try:
            connection = self._session.connection
            with connection.transaction():
                if not self._synchronous_commit:
                    connection.execute("SET LOCAL synchronous_commit = off")
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                return self._append_locked(connection, appends)
        except (psycopg.Error, Unavailable) as error:
            reason = describe(error, url) if isinstance(error, psycopg.Error) else str(error)
            log.error("event store append failed, batch of %d rolled back: %s", len(appends), reason)
            raise StorageFailure(f"event store {redact(url)} unavailable: {reason}") from None

    def _append_locked(self, connection: Connection, appends: Sequence[PendingAppend]) -> list[AppendOutcome]:
        """Decide each append against the state read under the lock, then write the accepted ones."""
        row = connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        head = int(row[0]) if row else 0
        command_ids = [a.command_id for a in appends if a.command_id]
        known: dict[str, CommandRecord] = {}
        if command_ids:
            for row in connection.execute(_KNOWN_COMMANDS, (command_ids,)):
                known[row[0]] = CommandRecord(*row)
        versions: dict[str, int] = {
            stream_id: version
            for stream_id, version in connection.execute(
                _STREAM_VERSIONS, (list({a.stream_id for a in appends}),)
            )
            if version is not None
        }
        now_us = time.time_ns() // 1000
        recorded_at = _EPOCH + timedelta(microseconds=now_us)
        encode = self._codec.encode
        outcomes: list[AppendOutcome] = []
        event_rows: list[tuple[Any, ...]] = []
        command_rows: list[CommandRecord] = []
        position = head
        random = os.urandom(16 * sum(len(a.events) for a in appends))
        refused: set[str] = set()  # streams with a refused append: later ones were decided on it
        for pending in appends:
            stream_id, command_id = pending.stream_id, pending.command_id
            earlier = known.get(command_id) if command_id else None
            if earlier is not None:  # a retry is a duplicate, whatever its stream did since
                outcomes.append(DuplicateCommand(earlier))
                refused.add(stream_id)
                continue
            current = versions.get(stream_id, 0)
            if current != pending.expected_version or stream_id in refused:
                outcomes.append(ConcurrencyConflict(stream_id, pending.expected_version, current))
                refused.add(stream_id)
                continue
            recorded: list[RecordedEvent] = []
            version = current
            for event in pending.events:
                offset = (position - head) * 16
                position += 1
                version += 1
                type_name, schema_version, payload = encode(event)
                event_id = uuid.UUID(bytes=random[offset : offset + 16], version=4)
                event_rows.append(
                    (
                        position,
                        stream_id,
                        version,
                        type_name,
                        schema_version,
                        payload,
                        event_id,
                        command_id,
                        recorded_at,
                    )
                )
                recorded.append(
                    RecordedEvent(
                        position, stream_id, version, type_name, event, str(event_id), command_id, now_us
                    )
                )
            versions[stream_id] = version
            if command_id and recorded:
                record = CommandRecord(
                    command_id, pending.fingerprint, stream_id, recorded[0].position, position
                )
                known[command_id] = record
                command_rows.append(record)
            outcomes.append(recorded)
        with connection.cursor() as cursor:
            if event_rows:
                with cursor.copy(
                    "COPY events (position, stream_id, stream_version, type, schema_version, payload,"
                    " event_id, command_id, recorded_at) FROM STDIN"
                ) as copy:
                    for row in event_rows:
                        copy.write_row(row)
            if command_rows:
                with cursor.copy(
                    "COPY commands (command_id, fingerprint, stream_id, first_position, last_position)"
                    " FROM STDIN"
                ) as copy:
                    for command_row in command_rows:
                        copy.write_row(command_row)
            if position > head:
                cursor.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, str(position)))
        return outcomes
