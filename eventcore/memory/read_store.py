"""An in-memory read store with the SQLite one's contract, for unit tests.

Documents are stored as JSON text, as in SQLite, so a handler that keeps a reference to a document
and mutates it later cannot change what was committed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventcore.read_store import (
    Checkpoint,
    Collection,
    Cursor,
    Document,
    Page,
    ParkedStream,
    ReadStoreReader,
    ReadStoreWriter,
    ReadView,
    SkippedEvent,
    TrackingUnitOfWork,
    UnitOfWork,
    sorted_page,
)


class _State:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, str]] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.parked: dict[tuple[str, str], ParkedStream] = {}
        self.skipped: dict[tuple[str, int], SkippedEvent] = {}
        self.lock = threading.Lock()

    def copy(self) -> _State:
        """A snapshot: later commits do not show through."""
        with self.lock:
            state = _State()
            state.tables = {name: dict(rows) for name, rows in self.tables.items()}
            state.checkpoints = dict(self.checkpoints)
            state.parked = dict(self.parked)
            state.skipped = dict(self.skipped)
        return state


class _MemoryView(ReadView):
    def __init__(self, state: _State) -> None:
        self._state = state
        self._tables = state.tables
        self._checkpoints = state.checkpoints

    def get(self, collection: Collection, key: str) -> Document | None:
        text = self._tables.get(collection.name, {}).get(key)
        return None if text is None else dict(json.loads(text))

    def page(
        self, collection: Collection, index: str, equals: Sequence[Any], after: Cursor | None, limit: int
    ) -> Page:
        rows = self._tables.get(collection.name, {})
        documents = ((key, json.loads(text)) for key, text in rows.items())
        return sorted_page(documents, collection.index(index), equals, after, limit)

    def checkpoints(self) -> list[Checkpoint]:
        return sorted(self._checkpoints.values(), key=lambda c: c.name)

    def parked_streams(self) -> list[ParkedStream]:
        return [self._state.parked[key] for key in sorted(self._state.parked)]

    def skipped_events(self) -> list[SkippedEvent]:
        return [self._state.skipped[key] for key in sorted(self._state.skipped)]

    def scan(self, collection: Collection) -> Iterator[tuple[str, Document]]:
        rows = self._tables.get(collection.name, {})
        for key in sorted(rows):
            yield key, dict(json.loads(rows[key]))


class InMemoryReadStoreReader(ReadStoreReader):
    def __init__(self, state: _State) -> None:
        self._state = state

    @contextmanager
    def snapshot(self) -> Iterator[ReadView]:
        yield _MemoryView(self._state.copy())


class _MemoryUnitOfWork(TrackingUnitOfWork):
    def __init__(self, state: _State) -> None:
        super().__init__()
        self._state = state

    def _load(self, collection: Collection, key: str) -> Document | None:
        text = self._state.tables.get(collection.name, {}).get(key)
        return None if text is None else dict(json.loads(text))

    def _track(self, collection: Collection, key: str, document: Document | None) -> None:
        if collection.name not in self._state.tables:
            raise KeyError(f"collection {collection.name} was never created")
        super()._track(collection, key, document)


class InMemoryReadStoreWriter(ReadStoreWriter):
    def __init__(self) -> None:
        self._state = _State()

    def checkpoints(self) -> dict[str, Checkpoint]:
        return dict(self._state.checkpoints)

    def parked_streams(self) -> dict[tuple[str, str], ParkedStream]:
        return dict(self._state.parked)

    def reset(self, projection: str, version: int, collections: Sequence[Collection]) -> None:
        with self._state.lock:
            for collection in collections:
                self._state.tables[collection.name] = {}
            self._state.checkpoints[projection] = Checkpoint(projection, version, 0, _now())
            for key in [key for key in self._state.parked if key[0] == projection]:
                del self._state.parked[key]

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        work = _MemoryUnitOfWork(self._state)
        yield work
        with self._state.lock:
            for collection, changes in work.dirty.items():
                table = self._state.tables[collection.name]
                for key, document in changes.items():
                    if document is None:
                        table.pop(key, None)
                    else:
                        table[key] = json.dumps(document)
            for projection, (version, position) in work.checkpoints.items():
                self._state.checkpoints[projection] = Checkpoint(projection, version, position, _now())
            for place, parked in work.parking.items():
                if parked is None:
                    self._state.parked.pop(place, None)
                else:
                    self._state.parked[place] = parked._replace(parked_at_us=_now())
            for skipped in work.skips:
                self._state.skipped[(skipped.projection, skipped.position)] = skipped._replace(
                    skipped_at_us=_now()
                )

    def discard(self, projection: str, collections: Sequence[Collection]) -> None:
        with self._state.lock:
            for collection in collections:
                self._state.tables.pop(collection.name, None)
            self._state.checkpoints.pop(projection, None)
            for key in [k for k in self._state.parked if k[0] == projection]:
                del self._state.parked[key]

    def replace(
        self, live: str, shadow: str, version: int, collections: Sequence[tuple[Collection, Collection]]
    ) -> bool:
        state = self._state
        with state.lock:
            built = state.checkpoints.get(shadow)
            current = state.checkpoints.get(live)
            if built is None or (current is not None and built.position < current.position):
                return False
            for live_collection, shadow_collection in collections:
                state.tables[live_collection.name] = state.tables.pop(shadow_collection.name, {})
            del state.checkpoints[shadow]
            state.checkpoints[live] = Checkpoint(live, version, built.position, _now())
            for key in [k for k in state.parked if k[0] in (live, shadow)]:
                parked = state.parked.pop(key)
                if key[0] == shadow:
                    state.parked[(live, key[1])] = parked._replace(projection=live)
        return True

    def reader(self) -> InMemoryReadStoreReader:
        return InMemoryReadStoreReader(self._state)


def _now() -> int:
    return time.time_ns() // 1000
