"""The read-store interfaces: documents in named collections, found by key or through secondary
indexes, with each projection's checkpoint kept beside them, and the streams a projection parked
(a handler failed on one of their events) and the events an operator skipped.

A collection declares its indexes; an index matches some fields for equality and orders by one
more field, newest (largest) first, with the document key as tie-breaker. Pages continue from a
cursor (the last document's order value and key), so a page boundary stays put while new
documents arrive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

Document = dict[str, Any]
Cursor = tuple[Any, str]  # (order-by value, key) of the last document on a page


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    equals: tuple[str, ...]
    order_by: str


@dataclass(frozen=True, slots=True, eq=False)
class Collection:
    """Declared once per read model; compared and hashed by identity (it keys hot dictionaries)."""

    name: str
    indexes: tuple[Index, ...] = ()

    def index(self, name: str) -> Index:
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(f"collection {self.name} has no index {name!r}")

    @property
    def indexed_fields(self) -> tuple[str, ...]:
        fields: list[str] = []
        for index in self.indexes:
            for field in (*index.equals, index.order_by):
                if field not in fields:
                    fields.append(field)
        return tuple(fields)


class Page(NamedTuple):
    documents: list[Document]
    next_cursor: Cursor | None  # None on the last page


class Checkpoint(NamedTuple):
    name: str
    version: int
    position: int
    updated_at_us: int


WHOLE_PROJECTION = ""  # a ParkedStream with this stream_id stops the whole projection (state failed)


class ParkedStream(NamedTuple):
    """A stream one projection stopped applying because a handler failed on one of its events.

    That event (at `position`) and the stream's later events wait for `retry` or `skip`; every
    other stream, and every other projection, goes on. `stream_id == WHOLE_PROJECTION` parks every
    stream of the projection at once: it failed.
    """

    projection: str
    stream_id: str
    position: int
    event_type: str
    error: str
    parked_at_us: int = 0  # set by the store when it records the park


class SkippedEvent(NamedTuple):
    """An event an operator dropped from one projection on purpose (`projector skip`)."""

    projection: str
    stream_id: str
    position: int
    event_type: str
    error: str
    skipped_at_us: int = 0


class ReadView(ABC):
    """Read-only access to a consistent snapshot: documents and checkpoints from the same moment."""

    @abstractmethod
    def get(self, collection: Collection, key: str) -> Document | None: ...

    @abstractmethod
    def page(
        self,
        collection: Collection,
        index: str,
        equals: Sequence[Any],
        after: Cursor | None,
        limit: int,
    ) -> Page: ...

    @abstractmethod
    def checkpoints(self) -> list[Checkpoint]: ...

    @abstractmethod
    def parked_streams(self) -> list[ParkedStream]:
        """Every parked stream of every projection, by projection and stream."""

    @abstractmethod
    def skipped_events(self) -> list[SkippedEvent]:
        """Every event skipped by an operator, by projection and position."""

    @abstractmethod
    def scan(self, collection: Collection) -> Iterator[tuple[str, Document]]:
        """Every document of a collection with its key, by key (for verification, not for queries)."""

    def position(self, projection: str) -> int:
        """The position up to which `projection` has applied events (0 before it ran)."""
        for checkpoint in self.checkpoints():
            if checkpoint.name == projection:
                return checkpoint.position
        return 0


class ReadStoreReader(ABC):
    """Opens snapshots; what the query side holds."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[ReadView]: ...

    def positions(self) -> dict[str, int]:
        """Each projection's applied position now (what a wait for `min_position` looks at)."""
        with self.snapshot() as view:
            return {c.name: c.position for c in view.checkpoints()}

    def close(self) -> None:
        """Release the underlying resources; the default holds none."""


class UnitOfWork(ABC):
    """One projector transaction: document changes plus the checkpoints that cover them.

    It is an identity map, as in ORMs: `get` returns this transaction's working document for a
    key (the same object every time), `put` hands a document over, and at commit every document
    that was put is written as it is then. So a handler changes a document and puts it back; it
    does not keep or share it. Serialising once per changed document per transaction, rather than
    once per change, is what lets a batch touch the same summary thousands of times cheaply.
    """

    @abstractmethod
    def get(self, collection: Collection, key: str) -> Document | None:
        """The working document for key as this transaction sees it (its own puts included)."""

    @abstractmethod
    def put(self, collection: Collection, key: str, document: Document) -> None: ...

    @abstractmethod
    def delete(self, collection: Collection, key: str) -> None: ...

    @abstractmethod
    def set_checkpoint(self, projection: str, version: int, position: int) -> None: ...

    @abstractmethod
    def park(self, parked: ParkedStream) -> None:
        """Record (or replace) a parked stream, committed with this transaction."""

    @abstractmethod
    def unpark(self, projection: str, stream_id: str) -> None:
        """Forget a parked stream (after a retry applied its events, or a skip)."""

    @abstractmethod
    def record_skip(self, skipped: SkippedEvent) -> None:
        """Record that an operator dropped one event from one projection."""

    def prefetch(self, collection: Collection, keys: Iterable[str]) -> None:
        """Load these documents now, in one go, for the `get`s that follow (a hint: the default
        does nothing, and `get` loads each key on its own)."""


class TrackingUnitOfWork(UnitOfWork):
    """The identity map both stores share; a store supplies `_load` and writes `dirty` at commit."""

    def __init__(self) -> None:
        self._working: dict[Collection, dict[str, Document | None]] = {}
        self.dirty: dict[Collection, dict[str, Document | None]] = {}  # None: delete
        self.checkpoints: dict[str, tuple[int, int]] = {}
        self.parking: dict[tuple[str, str], ParkedStream | None] = {}  # None: unpark
        self.skips: list[SkippedEvent] = []

    @abstractmethod
    def _load(self, collection: Collection, key: str) -> Document | None:
        """The committed document, freshly decoded (so the working copy is this transaction's)."""

    def _load_many(self, collection: Collection, keys: list[str]) -> dict[str, Document]:
        """The committed documents of these keys that exist (a store with a cheaper way overrides it)."""
        found = {}
        for key in keys:
            document = self._load(collection, key)
            if document is not None:
                found[key] = document
        return found

    def get(self, collection: Collection, key: str) -> Document | None:
        working = self._working.get(collection)
        if working is None:
            working = self._working[collection] = {}
        elif key in working:
            return working[key]
        document = working[key] = self._load(collection, key)
        return document

    def prefetch(self, collection: Collection, keys: Iterable[str]) -> None:
        working = self._working.get(collection)
        if working is None:
            working = self._working[collection] = {}
        missing = [key for key in set(keys) if key not in working]
        if missing:
            found = self._load_many(collection, missing)
            for key in missing:
                working[key] = found.get(key)  # None: known to be absent, as `get` would say

    def put(self, collection: Collection, key: str, document: Document) -> None:
        self._track(collection, key, document)

    def delete(self, collection: Collection, key: str) -> None:
        self._track(collection, key, None)

    def set_checkpoint(self, projection: str, version: int, position: int) -> None:
        self.checkpoints[projection] = (version, position)

    def park(self, parked: ParkedStream) -> None:
        self.parking[(parked.projection, parked.stream_id)] = parked

    def unpark(self, projection: str, stream_id: str) -> None:
        self.parking[(projection, stream_id)] = None

    def record_skip(self, skipped: SkippedEvent) -> None:
        self.skips.append(skipped)

    def _track(self, collection: Collection, key: str, document: Document | None) -> None:
        working = self._working.get(collection)
        if working is None:
            working = self._working[collection] = {}
        working[key] = document
        dirty = self.dirty.get(collection)
        if dirty is None:
            dirty = self.dirty[collection] = {}
        dirty[key] = document


class ReadStoreWriter(ABC):
    """The projector's side: one writing process per store."""

    @abstractmethod
    def checkpoints(self) -> dict[str, Checkpoint]: ...

    @abstractmethod
    def parked_streams(self) -> dict[tuple[str, str], ParkedStream]:
        """Every parked stream by (projection, stream_id), as committed (the runner's authority)."""

    @abstractmethod
    def reset(self, projection: str, version: int, collections: Sequence[Collection]) -> None:
        """(Re)create a projection's collections empty, at checkpoint 0 and the given version;
        its parked streams are forgotten (skips stay recorded)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """Everything written inside commits together, or not at all when the block raises."""

    @abstractmethod
    def discard(self, projection: str, collections: Sequence[Collection]) -> None:
        """Drop a projection's collections, checkpoint and parked streams (an abandoned rebuild)."""

    @abstractmethod
    def replace(
        self, live: str, shadow: str, version: int, collections: Sequence[tuple[Collection, Collection]]
    ) -> bool:
        """Swap a rebuilt projection in (blue-green), if its checkpoint has reached the live one's.

        In one transaction: each live collection of `collections` (live, shadow) pairs is dropped and
        its shadow takes its place; the shadow's checkpoint and parked streams become the live
        projection's, at `version`. Returns False, changing nothing, while the shadow is behind.
        """

    @abstractmethod
    def reader(self) -> ReadStoreReader:
        """A reader over the same store (for tests and tools)."""

    def close(self) -> None:
        """Release the underlying resources; the default holds none."""


def sorted_page(
    documents: Iterator[tuple[str, Document]],
    index: Index,
    equals: Sequence[Any],
    after: Cursor | None,
    limit: int,
) -> Page:
    """The reference paging semantics, for stores without a query engine."""
    matching = [
        (doc[index.order_by], key, doc)
        for key, doc in documents
        if all(doc.get(field) == value for field, value in zip(index.equals, equals, strict=True))
    ]
    matching.sort(key=lambda item: (item[0], item[1]), reverse=True)
    if after is not None:
        matching = [item for item in matching if (item[0], item[1]) < tuple(after)]
    chosen = matching[: limit + 1]
    more = len(chosen) > limit
    chosen = chosen[:limit]
    cursor = (chosen[-1][0], chosen[-1][1]) if more and chosen else None
    return Page([doc for _, _, doc in chosen], cursor)
