"""The read service's two read-only files, opened once both exist.

Until the projector has created the read database (and the write service the event store), the
service answers UNAVAILABLE and reports NOT_SERVING.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eventcore.errors import Unavailable
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
        with self.read_model.snapshot() as view:
            return {c.name: c.position for c in view.checkpoints()}

    def close(self) -> None:
        self.read_model.close()
        self.events.close()


class StorageSlot:
    """Holds the Storage once it can be opened; `get()` raises Unavailable before that."""

    def __init__(self, read_db: Location, event_store: Location) -> None:
        self._read_db = read_db
        self._event_store = event_store
        self._storage: Storage | None = None
        self._last_reason = ""

    def try_open(self) -> bool:
        if self._storage is not None:
            return True
        try:
            read_model = open_read_store_reader(self._read_db)
        except FileNotFoundError as missing:
            self._note(str(missing))
            return False
        try:
            events = open_event_log_reader(self._event_store, order_codec())
        except FileNotFoundError as missing:
            read_model.close()
            self._note(str(missing))
            return False
        self._storage = Storage(read_model, events)
        log.info("serving from %s and %s", display(self._read_db), display(self._event_store))
        return True

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

    def _note(self, reason: str) -> None:
        if reason != self._last_reason:
            log.info("not ready yet: %s", reason)
            self._last_reason = reason
