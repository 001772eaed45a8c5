"""Change announcements for SQLite files: the writer touches its lock file after each commit, and
every process that follows the file watches that lock file with Linux inotify.

Why this design: SQLite itself tells another process nothing, and looking at the file on a timer
costs CPU while idle and adds up to one interval of latency under load. A write of a few bytes to
the lock file (`<db>.writer-lock`, which the writer holds open anyway) costs the committing process
one system call; inotify turns it into a wake-up of every follower within microseconds, and costs
nothing while nothing is written. The directory is watched too, so a follower started before the
writer learns when the lock file appears, and one whose writer restarted (a new lock file) keeps
following. As a safety net for a lost announcement, `PRAGMA data_version` is compared once a
second while no announcement arrives; that cheap look is the only periodic work.

inotify is reached through ctypes (no dependency); one thread per watched file reads its events.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import sqlite3
import struct
import threading
from pathlib import Path

from eventcore.changes import ChangeSource
from eventcore.sqlite.files import open_read_only, writer_lock_path

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_FILE_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
_DIRECTORY_MASK = IN_CREATE | IN_MOVED_TO
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


class Inotify:
    """A non-blocking inotify instance."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_init1: {os.strerror(error)}")
        self.fd: int = fd

    def add_watch(self, path: Path, mask: int) -> int:
        """The watch descriptor, or -1 when the path cannot be watched (e.g. it does not exist)."""
        wd: int = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        return wd

    def read(self) -> list[tuple[int, int, str]]:
        """The pending events as (wd, mask, name); empty when none are pending."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events: list[tuple[int, int, str]] = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].rstrip(b"\0").decode(errors="replace")
            offset += length
            events.append((wd, mask, name))
        return events

    def close(self) -> None:
        os.close(self.fd)


class FileChanges(ChangeSource):
    """Announces each commit of the SQLite file `database` to this process's signals."""

    def __init__(self, database: str | Path, safety_interval: float = 1.0) -> None:
        super().__init__()
        self._database = Path(database).resolve()
        self._lock_file = writer_lock_path(self._database)
        self._safety_ms = int(safety_interval * 1000)
        self._inotify = Inotify()
        self._file_wd = -1
        self._directory_wd = self._inotify.add_watch(self._lock_file.parent, _DIRECTORY_MASK)
        if self._directory_wd < 0:
            log.warning(
                "cannot watch %s (missing?): changes of %s are seen once a second only",
                self._lock_file.parent,
                self._database.name,
            )
        self._watch_lock_file()
        self._data_version: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._stop_read, self._stop_write = os.pipe()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"changes-{self._database.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._stop_write, b"x")
        self._thread.join()
        for fd in (self._stop_read, self._stop_write):
            os.close(fd)
        self._inotify.close()
        if self._connection is not None:
            self._connection.close()

    def _watch_lock_file(self) -> None:
        self._file_wd = self._inotify.add_watch(self._lock_file, _FILE_MASK)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll(self._safety_ms)}
            if self._stop_read in ready:
                return
            if ready:
                self._on_events(self._inotify.read())
            elif self._data_version_moved():
                log.debug("%s changed without an announcement", self._database)
                self.hub.announce()

    def _on_events(self, events: list[tuple[int, int, str]]) -> None:
        for wd, mask, name in events:
            if wd == self._directory_wd and name == self._lock_file.name:
                self._watch_lock_file()  # a (new) writer created it
            elif wd == self._file_wd and mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self._file_wd = -1  # gone: the directory watch sees the next one appear
        if events:
            self.hub.announce()

    def _data_version_moved(self) -> bool:
        """The safety look: has any connection committed to the file since the previous look?"""
        try:
            if self._connection is None:
                if not self._database.exists():
                    return False
                self._connection = open_read_only(self._database)
            version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as error:
            log.debug("data_version of %s unreadable: %s", self._database, error)
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            return False
        moved = self._data_version is not None and version != self._data_version
        self._data_version = version
        return moved
