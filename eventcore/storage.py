"""Opens a backend from where the user says the data lives: a path means SQLite, a
`postgresql://` URL means PostgreSQL. The processes call these and never name a backend.

Readers raise FileNotFoundError (PostgreSQL: its subclass DatabaseNotReady) until the store's
writer has created it, so a process started first can wait; a store that is not ours raises
StorageRefused.
"""

from __future__ import annotations

import threading
from pathlib import Path

from eventcore.changes import ChangeSource
from eventcore.codec import EventCodec
from eventcore.event_store import EventLogReader, EventStore
from eventcore.postgres import connection as postgres
from eventcore.postgres.changes import PostgresChanges
from eventcore.postgres.event_store import PostgresEventLogReader, PostgresEventStore
from eventcore.postgres.read_store import PostgresReadStoreReader, PostgresReadStoreWriter
from eventcore.read_store import ReadStoreReader, ReadStoreWriter
from eventcore.sqlite.changes import FileChanges
from eventcore.sqlite.event_store import SQLiteEventLogReader, SQLiteEventStore
from eventcore.sqlite.files import Synchronous
from eventcore.sqlite.read_store import SQLiteReadStoreReader, SQLiteReadStoreWriter

Location = Path | str  # a SQLite file, or a postgresql:// URL


def parse_location(text: str) -> Location:
    """A command-line value: a postgresql:// (or postgres://) URL stays a string, anything else is a path."""
    return text if postgres.is_url(text) else Path(text)


def is_postgres(location: Location) -> bool:
    return postgres.is_url(location)


def display(location: Location) -> str:
    """For logs and messages: a URL without its password."""
    return postgres.redact(location) if isinstance(location, str) else str(location)


def open_event_store(
    location: Location, codec: EventCodec, synchronous: Synchronous = Synchronous.FULL
) -> EventStore:
    """The writer's store, created if missing. On PostgreSQL, NORMAL means synchronous_commit off."""
    if isinstance(location, str) and is_postgres(location):
        return PostgresEventStore.open(location, codec, synchronous_commit=synchronous is Synchronous.FULL)

    return SQLiteEventStore.open(Path(location), codec, synchronous)


def open_event_log_reader(location: Location, codec: EventCodec) -> EventLogReader:
    """Read-only access to the log; FileNotFoundError until a write service created it."""
    if isinstance(location, str) and is_postgres(location):
        return PostgresEventLogReader.open(location, codec)

    return SQLiteEventLogReader.open(Path(location), codec)


def open_read_store_writer(location: Location, stop: threading.Event | None = None) -> ReadStoreWriter | None:
    """The projector's store, created if missing.

    SQLite allows one writer and refuses a second at once (StorageLocked). PostgreSQL lets any number
    of projectors wait: this returns once this one is the active projector, or None if `stop` is set
    first.
    """
    if isinstance(location, str) and is_postgres(location):
        return PostgresReadStoreWriter.open(location, stop)

    return SQLiteReadStoreWriter.open(Path(location))


def open_read_store_reader(location: Location) -> ReadStoreReader:
    """Read-only snapshots; FileNotFoundError until a projector created the store."""
    if isinstance(location, str) and is_postgres(location):
        return PostgresReadStoreReader.open(location)

    return SQLiteReadStoreReader.open(Path(location))


def open_changes(location: Location) -> ChangeSource:
    """The commit announcements of the event store at `location` (inotify for SQLite, LISTEN/NOTIFY)."""
    if isinstance(location, str) and is_postgres(location):
        return PostgresChanges(location)
    return FileChanges(Path(location))


def open_read_store_maintainer(location: Location) -> ReadStoreWriter:
    """A writer for the projector's operator commands (retry, skip, rebuild), beside a running projector.

    SQLite: takes the read database's maintenance lock, not the projector's (one command at a time;
    SQLite serialises the two writers' transactions). PostgreSQL: a maintenance advisory lock, one
    command at a time; its transactions and the active projector's take turns on the checkpoints.
    """
    if isinstance(location, str) and is_postgres(location):
        return PostgresReadStoreWriter.open_maintainer(location)

    return SQLiteReadStoreWriter.open(Path(location), maintenance=True)
