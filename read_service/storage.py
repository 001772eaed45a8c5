"""The read service's two read-only files, opened once both exist and while both are usable.

Until the projector has created the read database (and the write service the event store), and
while either file is unreadable, damaged or not ours, the service answers UNAVAILABLE and reports
NOT_SERVING; it serves again once the files are fixed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from eventcore.errors import StorageRefused, Unavailable
from eventcore.event_store import EventLogReader
from eventcore.read_store import ReadStoreReader
from eventcore.storage import Location, display, open_event_log_reader, open_read_store_reader
from orders.events import order_codec

log = logging.getLogger(__name__)


@dataclass
class Storage:
    read_model: ReadStoreReader
    events: EventLogReader

    def positions(self) -> dict[str, int]:
        return self.read_model.positions()

    def close(self) -> None:
        self.read_model.close()
        self.events.close()


Identity = tuple[int, int] | None  # a file's (device, inode); None for a server's database


def _identity(location: Location) -> Identity:
    if not isinstance(location, Path):
        return None
    info = location.stat()
    return info.st_dev, info.st_ino


class StorageSlot:
    """Holds the Storage while both files can be used; `get()` raises Unavailable otherwise.

    `check()` looks at the files again (the read service calls it every few tenths of a second):
    a file replaced under its path (a restore) is reopened, one that became unreadable or damaged
    drops the Storage until it is usable again, so queries answer UNAVAILABLE, never INTERNAL.
    """

    def __init__(self, read_db: Location, event_store: Location) -> None:
        self._read_db = read_db
        self._event_store = event_store
        self._storage: Storage | None = None
        self._identities: tuple[Identity, Identity] | None = None
        self._last_reason = ""
        self._served = False

    def try_open(self) -> bool:
        if self._storage is not None:
            return True
        try:
            identities = (_identity(self._read_db), _identity(self._event_store))
            read_model = open_read_store_reader(self._read_db)
        except (OSError, StorageRefused, Unavailable) as missing:
            self._note(str(missing))
            return False
        try:
            events = open_event_log_reader(self._event_store, order_codec())
        except (OSError, StorageRefused, Unavailable) as missing:
            read_model.close()
            self._note(str(missing))
            return False
        storage = Storage(read_model, events)
        problem = self._unusable(storage)
        if problem:
            storage.close()
            self._note(problem)
            return False
        self._storage, self._identities = storage, identities
        self._last_reason = ""
        self._served = True
        log.info("serving from %s and %s", display(self._read_db), display(self._event_store))
        return True

    def check(self) -> bool:
        """True while both files serve; reopens replaced files, drops unusable ones."""
        if self._storage is not None:
            problem = self._replaced() or self._unusable(self._storage)
            if not problem:
                return True
            self._note(problem)
            self.close()
        return self.try_open()

    def _replaced(self) -> str:
        """Why a path no longer leads to the file that is open (gone, replaced, unreadable), or ""."""
        for path, opened in zip((self._read_db, self._event_store), self._identities or (), strict=False):
            if not isinstance(path, Path):
                continue
            try:
                if _identity(path) != opened:
                    return f"{path} was replaced"
                if not os.access(path, os.R_OK):  # no open(): closing it would drop SQLite's locks
                    return f"{path}: not readable"
            except OSError as error:
                return f"{path}: {error.strerror or error}"
        return ""

    @staticmethod
    def _unusable(storage: Storage) -> str:
        """Why the open files cannot answer (a read of each fails), or ""."""
        try:
            storage.positions()
            storage.events.head_position()
        except Unavailable as error:
            return str(error)
        return ""

    def get(self) -> Storage:
        if self._storage is None and not self.try_open():
            raise Unavailable(f"not ready: {self._last_reason}")
        assert self._storage is not None
        return self._storage

    def positions(self) -> dict[str, int]:
        return self.get().positions()

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()
            self._storage = None
            self._identities = None

    def _note(self, reason: str) -> None:
        """Log each new reason once: INFO before the first serving, WARNING after."""
        if reason != self._last_reason:
            if self._served:
                log.warning("not serving: %s", reason)
            else:
                log.info("not ready yet: %s", reason)
            self._last_reason = reason
