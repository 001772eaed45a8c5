"""The one place that opens SQLite files: pragmas, read-only opening, migrations, the writer lock.

Schemas are numbered SQL files (`migrations/<schema>/NNNN_name.sql`) applied in order at start-up
and tracked by `PRAGMA user_version`, each in its own transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class Synchronous(StrEnum):
    """How hard a commit waits for the disk (SQLite `PRAGMA synchronous` in WAL mode)."""

    FULL = "FULL"  # a commit is on disk when it returns: nothing acknowledged is lost
    NORMAL = "NORMAL"  # a commit may be lost on power failure (not on a process crash)
    OFF = "OFF"  # for fixtures only


class StorageLocked(Exception):
    """Another process already writes this file."""


def open_for_writing(path: str | Path, synchronous: Synchronous = Synchronous.FULL) -> sqlite3.Connection:
    """A read-write connection in WAL mode, autocommit (transactions are explicit)."""
    connection = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, cached_statements=256
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous.value}")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def open_read_only(path: str | Path) -> sqlite3.Connection:
    """A connection that cannot write: "a query never changes state" is enforced by SQLite itself."""
    uri = f"file:{Path(path).resolve()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout=5000")
    connection.execute("PRAGMA query_only=1")
    return connection


def open_migrated_reader(path: str | Path, schema: str, what: str) -> sqlite3.Connection:
    """Read-only connection to a file its writer has fully migrated.

    Raises FileNotFoundError (with `what` in the message) until the file exists with that schema,
    so a process started before the writer can wait for it.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} {path} does not exist yet")
    connection = open_read_only(path)
    if schema_version(connection) < latest_version(schema):
        connection.close()
        raise FileNotFoundError(f"{what} {path} is not initialised yet")
    return connection


def open_locked_writer(
    path: str | Path, schema: str, synchronous: Synchronous, lock_name: str = "writer"
) -> tuple[sqlite3.Connection, WriterSession]:
    """Take the file's writer lock, open it for writing, apply pending migrations, and hand WAL
    checkpoints to a background thread so that no commit of the writer ever pays for one.

    `lock_name` "maintenance" takes a second lock instead, for an operator command writing beside
    the running writer (SQLite serialises the two connections' transactions)."""
    lock = WriterLock.acquire(path, lock_name)
    try:
        connection = open_for_writing(path, synchronous)
        migrate(connection, schema)
        connection.execute("PRAGMA wal_autocheckpoint=0")
        checkpointer = Checkpointer.start(path)
    except BaseException:
        lock.release()
        raise
    lock.announce()  # the schema is there: followers waiting for the file may open it now
    return connection, WriterSession(lock, checkpointer)


def schema_version(connection: sqlite3.Connection) -> int:
    row = connection.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migration_files(schema: str) -> list[Path]:
    """The numbered migration files of one schema, in order."""
    files = sorted((MIGRATIONS_DIR / schema).glob("[0-9][0-9][0-9][0-9]_*.sql"))
    for expected, path in enumerate(files, start=1):
        if int(path.name[:4]) != expected:
            raise RuntimeError(f"migration numbers of {schema} must run 0001, 0002, ...: {path.name}")
    return files


def latest_version(schema: str) -> int:
    return len(migration_files(schema))


def migrate(connection: sqlite3.Connection, schema: str) -> int:
    """Apply the migrations the file has not seen yet; returns the resulting version."""
    files = migration_files(schema)
    current = schema_version(connection)
    if current > len(files):
        raise RuntimeError(
            f"database is at {schema} schema version {current}, newer than this code ({len(files)})"
        )
    for version, path in enumerate(files[current:], start=current + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(path.read_text()):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version={version}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        log.info("applied %s migration %s", schema, path.name)
    return len(files)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.complete_statement knows the grammar)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statement = pending.strip()
            if statement and statement != ";":
                statements.append(statement)
            pending = ""
    if pending.strip() and not pending.strip().startswith("--"):
        raise RuntimeError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")
    return statements


class Checkpointer:
    """Copies committed WAL pages back into the database file from a thread of its own.

    SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, which then
    takes tens of milliseconds instead of a fraction of one. A PASSIVE checkpoint never blocks the
    writer or the readers; it only copies what no reader still needs.
    """

    def __init__(self, connection: sqlite3.Connection, interval: float) -> None:
        self._connection = connection
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)

    @classmethod
    def start(cls, path: str | Path, interval: float = 0.5) -> Checkpointer:
        checkpointer = cls(open_for_writing(path, Synchronous.NORMAL), interval)
        checkpointer._thread.start()
        return checkpointer

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as error:  # the next round retries; the WAL just grows meanwhile
                log.warning("WAL checkpoint failed: %s", error)

    def stop(self) -> None:
        """Idempotent; the writer's own close then checkpoints what is left."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self._connection.close()


@dataclass
class WriterSession:
    """What a file's single writer holds besides its connection."""

    lock: WriterLock
    checkpointer: Checkpointer

    def announce(self) -> None:
        """Tell followers of the file that a commit happened (see eventcore/sqlite/changes.py)."""
        self.lock.announce()

    def release(self) -> None:
        self.checkpointer.stop()
        self.lock.release()


def writer_lock_path(database: str | Path) -> Path:
    """The lock file its writer holds; each commit writes to it, which followers watch."""
    return Path(f"{database}.writer-lock")


@dataclass
class WriterLock:
    """An exclusive advisory lock next to a database file: one writing process per file."""

    path: Path
    handle: IO[str] | None = None
    commits: int = 0
    _offset: int = 0

    @classmethod
    def acquire(cls, database: str | Path, name: str = "writer") -> WriterLock:
        lock_path = writer_lock_path(database) if name == "writer" else Path(f"{database}.{name}-lock")
        handle = open(lock_path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            whom = "another process" if name == "writer" else f"another process ({name})"
            raise StorageLocked(f"{database} is already opened for writing by {whom}") from None
        handle.seek(0)
        handle.truncate()
        pid_line = f"{os.getpid()}\n"
        handle.write(pid_line)
        handle.flush()
        return cls(lock_path, handle, _offset=len(pid_line))

    def announce(self) -> None:
        """One pwrite of a commit counter after the pid line: an inotify IN_MODIFY for followers."""
        if self.handle is not None:
            self.commits += 1
            os.pwrite(self.handle.fileno(), b"%020d\n" % self.commits, self._offset)

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
