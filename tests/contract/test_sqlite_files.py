"""Our SQLite files are marked and looked at before anything touches them (eventcore/sqlite/files.py):
first-release files are accepted and marked, foreign ones refused untouched, modes are the owner's."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventcore.sqlite import files
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.files import APPLICATION_IDS, FileRefused, inspect
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import order_codec


def application_id(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA application_id").fetchone()[0])
    finally:
        connection.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def restore_mode() -> Iterator[None]:
    yield
    files.set_file_mode(0o600)


def test_new_files_are_marked_with_their_schema_id(tmp_path: Path) -> None:
    SQLiteEventStore.open(tmp_path / "events.db", order_codec()).close()
    SQLiteReadStoreWriter.open(tmp_path / "read.db").close()
    assert application_id(tmp_path / "events.db") == APPLICATION_IDS["event_store"] == 0x4F525645
    assert application_id(tmp_path / "read.db") == APPLICATION_IDS["read_store"] == 0x4F525652


def test_a_first_release_file_is_accepted_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore.open(path, order_codec()).close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA application_id=0")  # as the first release left it
    connection.close()
    inspect(path, "event_store")
    SQLiteEventStore.open(path, order_codec()).close()
    assert application_id(path) == APPLICATION_IDS["event_store"]


@pytest.mark.parametrize(
    "statements",
    [
        ["CREATE TABLE events(id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO events(name) VALUES ('x')"],
        ["CREATE TABLE notes(x)"],
        ["PRAGMA application_id=1234", "CREATE TABLE t(x)"],
        ["CREATE TABLE events(x)", "PRAGMA user_version=1"],
    ],
)
def test_a_foreign_file_is_refused_untouched(tmp_path: Path, statements: list[str]) -> None:
    path = tmp_path / "theirs.db"
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()
    before = digest(path)
    with pytest.raises(FileRefused, match=str(path)):
        SQLiteEventStore.open(path, order_codec())
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]


def test_the_other_schemas_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    SQLiteReadStoreWriter.open(tmp_path / "read.db").close()
    with pytest.raises(FileRefused, match="this is the read database, not the event store"):
        SQLiteEventStore.open(tmp_path / "read.db", order_codec())


def test_random_bytes_a_directory_and_a_missing_directory_are_refused(tmp_path: Path) -> None:
    noise = tmp_path / "noise.db"
    noise.write_bytes(bytes(range(256)) * 64)
    cases = {
        noise: "not a SQLite database",
        tmp_path: "is a directory",
        tmp_path / "nope" / "events.db": "does not exist",
    }
    for path, says in cases.items():
        with pytest.raises(FileRefused, match=says):
            SQLiteEventStore.open(path, order_codec())
    assert not (tmp_path / "noise.db.writer-lock").exists()


def test_a_damaged_file_is_refused_and_its_lock_file_removed(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore.open(path, order_codec())
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))
    with pytest.raises(FileRefused, match=r"malformed|not a database"):
        SQLiteEventStore.open(path, order_codec())
    assert not (tmp_path / "events.db.writer-lock").exists()


def test_created_files_have_the_file_mode(tmp_path: Path, restore_mode: None) -> None:
    for mode, name in [(0o600, "a.db"), (0o640, "b.db")]:
        files.set_file_mode(mode)
        store = SQLiteEventStore.open(tmp_path / name, order_codec())
        try:
            for suffix in ("", "-wal", "-shm", ".writer-lock"):
                assert stat.S_IMODE((tmp_path / f"{name}{suffix}").stat().st_mode) == mode, suffix
        finally:
            store.close()


def _count_pages_not_written(path: Path) -> bytes:
    """Make the header claim more pages than the file holds, as a checkpoint in progress can show
    to a view that ignores the writer's locks; returns the true header bytes."""
    with path.open("r+b") as handle:
        true_count = handle.read(32)[28:32]
        handle.seek(28)
        handle.write((50).to_bytes(4, "big"))
    return true_count


def _restore_page_count(path: Path, true_count: bytes) -> None:
    with path.open("r+b") as handle:
        handle.seek(28)
        handle.write(true_count)


def test_a_file_caught_mid_checkpoint_is_accepted_once_it_settles(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore.open(path, order_codec()).close()
    true_count = _count_pages_not_written(path)
    settle = threading.Timer(0.2, _restore_page_count, (path, true_count))
    settle.start()
    try:
        inspect(path, "event_store")  # looks again until the view settles
    finally:
        settle.join()


def test_a_header_that_stays_wrong_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore.open(path, order_codec()).close()
    _count_pages_not_written(path)
    with pytest.raises(FileRefused, match="unusable: database disk image is malformed"):
        inspect(path, "event_store")
