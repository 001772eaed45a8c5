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
    ReadStoreReader,
    ReadStoreWriter,
    ReadView,
    TrackingUnitOfWork,
    UnitOfWork,
    sorted_page,
)


class _State:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, str]] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.lock = threading.Lock()


class _MemoryView(ReadView):
    def __init__(self, tables: dict[str, dict[str, str]], checkpoints: dict[str, Checkpoint]) -> None:
        self._tables = tables
        self._checkpoints = checkpoints

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


class InMemoryReadStoreReader(ReadStoreReader):
    def __init__(self, state: _State) -> None:
        self._state = state

    @contextmanager
    def snapshot(self) -> Iterator[ReadView]:
        with self._state.lock:  # a snapshot is a copy: later commits do not show through
            tables = {name: dict(rows) for name, rows in self._state.tables.items()}
            checkpoints = dict(self._state.checkpoints)
        yield _MemoryView(tables, checkpoints)


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

    def reset(self, projection: str, version: int, collections: Sequence[Collection]) -> None:
        with self._state.lock:
            for collection in collections:
                self._state.tables[collection.name] = {}
            self._state.checkpoints[projection] = Checkpoint(projection, version, 0, _now())

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

    def reader(self) -> InMemoryReadStoreReader:
        return InMemoryReadStoreReader(self._state)


def _now() -> int:
    return time.time_ns() // 1000
