"""Blue-green rebuilds: a projection is replayed from position 0 into shadow tables beside the live
ones, which keep answering (and, when the code is unchanged, keep being projected); once the shadow
has caught up with the live checkpoint it replaces the live tables in one transaction.

The shadow is an ordinary projection to the runner: its name is `<name>@rebuild`, its collections
are `<collection>__g<generation>` (a generation unique to this rebuild, so index names never clash),
and its handlers are the live handlers writing through a unit of work that maps each live
collection to its shadow. So a read store needs one operation for rebuilds, `replace`; readers see
the old tables or the new ones, never a mix, and never an older checkpoint than before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from eventcore.event_store import EventLogReader
from eventcore.events import RecordedEvent
from eventcore.projection import EventHandler, Projection, ProjectionRunner
from eventcore.read_store import (
    Collection,
    Document,
    ParkedStream,
    ReadStoreWriter,
    SkippedEvent,
    UnitOfWork,
)

log = logging.getLogger(__name__)

SHADOW_SUFFIX = "@rebuild"
Progress = Callable[[str, int, int], None]  # (projection, position, head)


def shadow_name(projection: str) -> str:
    return projection + SHADOW_SUFFIX


def is_shadow(name: str) -> bool:
    return name.endswith(SHADOW_SUFFIX)


def live_name(shadow: str) -> str:
    return shadow[: -len(SHADOW_SUFFIX)]


class _ShadowWork(UnitOfWork):
    """The live handlers' unit of work, with each live collection mapped to its shadow."""

    __slots__ = ("_shadows", "_work")

    def __init__(self, work: UnitOfWork, shadows: dict[Collection, Collection]) -> None:
        self._work = work
        self._shadows = shadows

    def get(self, collection: Collection, key: str) -> Document | None:
        return self._work.get(self._shadows[collection], key)

    def put(self, collection: Collection, key: str, document: Document) -> None:
        self._work.put(self._shadows[collection], key, document)

    def delete(self, collection: Collection, key: str) -> None:
        self._work.delete(self._shadows[collection], key)

    def set_checkpoint(self, projection: str, version: int, position: int) -> None:
        self._work.set_checkpoint(projection, version, position)

    def park(self, parked: ParkedStream) -> None:
        self._work.park(parked)

    def unpark(self, projection: str, stream_id: str) -> None:
        self._work.unpark(projection, stream_id)

    def record_skip(self, skipped: SkippedEvent) -> None:
        self._work.record_skip(skipped)

    def prefetch(self, collection: Collection, keys: Iterable[str]) -> None:
        self._work.prefetch(self._shadows[collection], keys)


def _redirected(handler: EventHandler, shadows: dict[Collection, Collection]) -> EventHandler:
    def shadowed(work: UnitOfWork, event: RecordedEvent) -> None:
        handler(_ShadowWork(work, shadows), event)

    return shadowed


def shadow_of(
    projection: Projection, generation: int
) -> tuple[Projection, list[tuple[Collection, Collection]]]:
    """The shadow projection of one rebuild, and its (live, shadow) collection pairs."""
    pairs = [(c, Collection(f"{c.name}__g{generation}", c.indexes)) for c in projection.collections]
    shadows = dict(pairs)
    handlers = {cls: _redirected(h, shadows) for cls, h in projection.handlers.items()}
    prefetch = projection.prefetch
    shadow = Projection(
        shadow_name(projection.name),
        projection.version,
        tuple(s for _, s in pairs),
        handlers,
        None if prefetch is None else (lambda work, events: prefetch(_ShadowWork(work, shadows), events)),
    )
    return shadow, pairs


class Rebuild:
    """One projection's rebuild, driven a batch at a time by `step` (so a projector can interleave it
    with its live batches) or to the end by `run`."""

    def __init__(
        self,
        log_reader: EventLogReader,
        store: ReadStoreWriter,
        projection: Projection,
        batch_size: int = 5000,
        max_parked: int = 100,
        skipped: Sequence[tuple[str, int]] = (),
        generation: int | None = None,
    ) -> None:
        """`skipped`: the live projection's (name, position) skips, honoured by the replay too."""
        self.projection = projection
        self._log = log_reader
        self._store = store
        self._shadow, self._pairs = shadow_of(projection, generation or time.time_ns() // 1000)
        shadow_skips = {
            (self._shadow.name, position) for name, position in skipped if name == projection.name
        }
        self._runner = ProjectionRunner(
            log_reader, store, [self._shadow], batch_size, max_parked, shadow_skips
        )
        self.done = False
        self._runner.prepare()  # creates the shadow tables, at checkpoint 0

    @property
    def position(self) -> int:
        return self._runner.positions.get(self._shadow.name, 0)

    def step(self) -> bool:
        """Apply one batch to the shadow; at the live checkpoint, swap. True once swapped."""
        if self.done:
            return True
        if self._runner.run_once() == 0:
            self.done = self._store.replace(
                self.projection.name, self._shadow.name, self.projection.version, self._pairs
            )
            if self.done:
                log.info(
                    "projection %s rebuilt at position %d: the new tables answer now",
                    self.projection.name,
                    self.position,
                )
        return self.done

    def run(
        self, progress: Progress | None = None, until_stopped: Callable[[], bool] = lambda: False
    ) -> bool:
        """Step until swapped (True) or told to stop (False: the shadow is discarded)."""
        while not until_stopped():
            if self.step():
                return True
            if progress is not None:
                progress(self.projection.name, self.position, self._log.head_position())
        self.abandon()
        return False

    def abandon(self) -> None:
        """Drop the shadow's tables and checkpoint; the live read model is untouched."""
        if not self.done:
            self._store.discard(self._shadow.name, self._shadow.collections)
            log.info("rebuild of %s abandoned at position %d", self.projection.name, self.position)


def skips_of(store: ReadStoreWriter) -> list[tuple[str, int]]:
    reader = store.reader()
    try:
        with reader.snapshot() as view:
            return [(k.projection, k.position) for k in view.skipped_events()]
    finally:
        reader.close()
