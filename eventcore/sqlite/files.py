"""The one place that opens SQLite files: pragmas, read-only opening, migrations, the writer lock.

Schemas are numbered SQL files (`migrations/<schema>/NNNN_name.sql`) applied in order at start-up
and tracked by `PRAGMA user_version`, each in its own transaction.

Our files carry `PRAGMA application_id` (one per schema). A file is looked at before anything
touches it (no lock file, no -wal beside it): random bytes, another program's SQLite database, the
other schema's file, a newer schema, a missing or unwritable directory are refused with FileRefused,
one line naming the file and the reason. Files of the first release (application_id 0, our tables,
a schema version we know) are accepted and marked. Files the writer creates get `file_mode()`
(0600 unless set_file_mode says otherwise); SQLite gives a database's -wal and -shm its mode.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import quote

from eventcore.errors import StorageRefused

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# PRAGMA application_id of each schema's files: "ORVE" and "ORVR" in ASCII.
APPLICATION_IDS = {"event_store": 0x4F525645, "read_store": 0x4F525652}
_WHAT = {"event_store": "event store", "read_store": "read database"}

_file_mode = 0o600


def set_file_mode(mode: int) -> None:
    """Permissions of the files this process creates from now on (databases, lock files)."""
    global _file_mode
    _file_mode = mode


def file_mode() -> int:
    return _file_mode


class Synchronous(StrEnum):
    """How hard a commit waits for the disk (SQLite `PRAGMA synchronous` in WAL mode)."""

    FULL = "FULL"  # a commit is on disk when it returns: nothing acknowledged is lost
    NORMAL = "NORMAL"  # a commit may be lost on power failure (not on a process crash)
    OFF = "OFF"  # for fixtures only


class FileRefused(StorageRefused):
    """A file the process cannot use as its own; the message is one line naming the file and why."""


class StorageLocked(FileRefused):
    """Another process already writes this file."""


def describe(schema: str) -> str:
    """What a schema's file is called in messages ("event store", "read database")."""
    return _WHAT.get(schema, schema)


def inspect(path: str | Path, schema: str) -> None:
    """FileRefused unless `path` can be (or become) a file of `schema`; touches nothing.

    A missing file passes if its directory exists and is writable; an empty one passes as new.
    """
    file = Path(path)
    what = f"{describe(schema)} {file}"
    try:
        info = file.stat()
    except FileNotFoundError:
        _check_directory(file, what)
        return
    except OSError as error:
        raise FileRefused(f"{what}: cannot look at it: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileRefused(f"{what}: is a directory, not a database file")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{what}: is not a regular file")
    if info.st_size == 0:
        return
    if not os.access(file, os.R_OK):
        raise FileRefused(f"{what}: cannot read it: permission denied")
    application_id = _peek(file, what, lambda c: int(c.execute("PRAGMA application_id").fetchone()[0]))
    if application_id == APPLICATION_IDS.get(schema):
        return
    for other, other_id in APPLICATION_IDS.items():
        if application_id == other_id:
            raise FileRefused(f"{what}: this is the {describe(other)}, not the {describe(schema)}")
    if application_id != 0:
        raise FileRefused(
            f"{what}: another program's SQLite database "
            f"(application_id {application_id:#010x}); left untouched"
        )
    _check_unmarked(file, schema, what)


def _check_directory(file: Path, what: str) -> None:
    directory = file.absolute().parent
    if not directory.exists():
        raise FileRefused(f"{what}: cannot create it: directory {directory} does not exist")
    if not directory.is_dir():
        raise FileRefused(f"{what}: cannot create it: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise FileRefused(f"{what}: cannot create it: directory {directory} is not writable")


T = TypeVar("T")


# An immutable view ignores the WAL and the writer's locks, so while a writer checkpoints it can
# catch the main file half-written (a header counting pages not written yet reads as "malformed").
# Such a view settles within milliseconds; a damaged file stays damaged.
_PEEK_ATTEMPTS = 10
_PEEK_PAUSE = 0.05  # seconds, times the attempt number


def _peek(file: Path, what: str, look: Callable[[sqlite3.Connection], T]) -> T:
    """`look` at the main file through a connection that takes no lock and writes nothing.

    Through SQLite, never a plain file handle: closing any handle of a file drops every POSIX lock
    this process holds on it, which would leave this process's own connections unprotected.
    """
    for attempt in range(1, _PEEK_ATTEMPTS + 1):
        try:
            return _peek_once(file, look)
        except sqlite3.DatabaseError as error:
            if "not a database" in str(error):
                raise FileRefused(f"{what}: not a SQLite database (the file holds other data)") from None
            if attempt == _PEEK_ATTEMPTS:
                raise FileRefused(f"{what}: unusable: {error}") from None
        except sqlite3.Error as error:
            raise FileRefused(f"{what}: cannot read it: {error}") from None
        time.sleep(_PEEK_PAUSE * attempt)
    raise AssertionError("unreachable")


def _peek_once(file: Path, look: Callable[[sqlite3.Connection], T]) -> T:
    connection = sqlite3.connect(f"file:{quote(str(file.resolve()))}?mode=ro&immutable=1", uri=True)
    try:
        return look(connection)
    finally:
        connection.close()


def _check_unmarked(file: Path, schema: str, what: str) -> None:
    """An unmarked SQLite file: empty, ours from the first release, or another program's."""
    version, tables = _peek(file, what, lambda c: (schema_version(c), _tables(c)))
    if not tables and version == 0:
        return
    latest = latest_version(schema)
    if 1 <= version <= latest and all(
        tables.get(name) == columns for name, columns in schema_tables(schema, version).items()
    ):
        return
    if version > latest:
        raise FileRefused(
            f"{what}: schema version {version} is newer than this program's ({latest}); left untouched"
        )
    names = ", ".join(sorted(tables)[:5]) or "none"
    raise FileRefused(f"{what}: another program's SQLite database (tables: {names}); left untouched")


def _tables(connection: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    names = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        name: tuple(row[1] for row in connection.execute("SELECT * FROM pragma_table_info(?)", (name,)))
        for name in names
    }


@cache
def schema_tables(schema: str, version: int) -> dict[str, tuple[str, ...]]:
    """The tables (and their columns) that migrations 1..version of `schema` create."""
    connection = sqlite3.connect(":memory:")
    try:
        for path in migration_files(schema)[:version]:
            for statement in _statements(path.read_text()):
                connection.execute(statement)
        return _tables(connection)
    finally:
        connection.close()


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
    inspect(path, schema)
    try:
        connection = open_read_only(path)
    except sqlite3.Error as error:
        raise FileRefused(f"{what} {path}: cannot open it: {error}") from None
    try:
        version = schema_version(connection)
    except sqlite3.Error as error:
        connection.close()
        raise FileRefused(f"{what} {path}: unusable: {error}") from None
    if version < latest_version(schema):
        connection.close()
        raise FileNotFoundError(f"{what} {path} is not initialised yet")
    if version > latest_version(schema):
        connection.close()
        raise FileRefused(
            f"{what} {path}: schema version {version} is newer than this program's ({latest_version(schema)})"
        )
    return connection


def open_locked_writer(
    path: str | Path, schema: str, synchronous: Synchronous, lock_name: str = "writer"
) -> tuple[sqlite3.Connection, WriterSession]:
    """Look at the file (FileRefused if it is not ours), take its writer lock, open it for writing,
    apply pending migrations, and hand WAL checkpoints to a background thread so that no commit of
    the writer ever pays for one. A refusal after the lock removes the lock file again.

    `lock_name` "maintenance" takes a second lock instead, for an operator command writing beside
    the running writer (SQLite serialises the two connections' transactions)."""
    what = f"{describe(schema)} {path}"
    inspect(path, schema)
    lock = WriterLock.acquire(path, lock_name, what)
    connection: sqlite3.Connection | None = None
    try:
        if _create(Path(path), schema):
            _mark(path, schema)
        connection = open_for_writing(path, synchronous)
        migrate(connection, schema, what)
        probe(connection)
        connection.execute("PRAGMA wal_autocheckpoint=0")
        checkpointer = Checkpointer.start(path)
    except sqlite3.Error as error:
        if connection is not None:
            connection.close()
        lock.release(remove=True)
        raise FileRefused(f"{what}: unusable: {error}") from None
    except BaseException:
        if connection is not None:
            connection.close()
        lock.release(remove=True)
        raise
    lock.announce()  # the schema is there: followers waiting for the file may open it now
    return connection, WriterSession(lock, checkpointer)


def _create(path: Path, schema: str) -> bool:
    """Create the file with file_mode() if it does not exist (or is empty); True if it is new."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _file_mode)
    except FileExistsError:
        return path.stat().st_size == 0
    except OSError as error:
        raise FileRefused(f"{describe(schema)} {path}: cannot create it: {error.strerror or error}") from None
    try:
        os.fchmod(fd, _file_mode)  # past the umask
    finally:
        os.close(fd)
    return True


def _mark(path: str | Path, schema: str) -> None:
    """Mark a new file as ours before anything else is in it, outside WAL mode, so that the main
    file's header says so from the start."""
    connection = sqlite3.connect(str(path), isolation_level=None)
    try:
        connection.execute(f"PRAGMA application_id={APPLICATION_IDS[schema]}")
    finally:
        connection.close()


def probe(connection: sqlite3.Connection) -> None:
    """Read the schema and the first page of every table: a damaged file fails here, at start-up,
    rather than in the first command (sqlite3.DatabaseError, "database disk image is malformed")."""
    for name in _tables(connection):
        connection.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchall()


def _application_id(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA application_id").fetchone()[0])


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


def migrate(connection: sqlite3.Connection, schema: str, what: str = "") -> int:
    """Apply the migrations the file has not seen yet (marking a first-release file as ours);
    returns the resulting version. `what` names the file in a refusal."""
    files = migration_files(schema)
    current = schema_version(connection)
    if current > len(files):
        raise FileRefused(
            f"{what or describe(schema)}: schema version {current}"
            f" is newer than this program's ({len(files)})"
        )
    application_id = APPLICATION_IDS.get(schema)
    if application_id is not None and _application_id(connection) != application_id:
        connection.execute(f"PRAGMA application_id={application_id}")  # a file of the first release
        log.info("marked the %s as ours (application_id %#010x)", describe(schema), application_id)
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
    def acquire(cls, database: str | Path, name: str = "writer", what: str = "") -> WriterLock:
        what = what or str(database)
        lock_path = writer_lock_path(database) if name == "writer" else Path(f"{database}.{name}-lock")
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, _file_mode)
        except OSError as error:
            raise FileRefused(
                f"{what}: cannot create its lock file {lock_path}: {error.strerror or error}"
            ) from None
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            whom = "another process" if name == "writer" else f"another process ({name})"
            raise StorageLocked(f"{what} is already opened for writing by {whom}") from None
        os.fchmod(fd, _file_mode)
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

    def release(self, remove: bool = False) -> None:
        """Unlock; `remove` also deletes the lock file (after a refused start, nothing is left)."""
        if self.handle is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
