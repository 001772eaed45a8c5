"""Projections and the runner that keeps them up to date.

A projection is a map from domain event class to a small function that changes documents through a
unit of work. The runner reads the log in batches and applies each batch to every projection in one
transaction together with that projection's new checkpoint, so an event is applied exactly once
even across crashes and replays: an event at or below a projection's checkpoint is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventcore.event_store import EventLogReader
from eventcore.events import RecordedEvent
from eventcore.read_store import Collection, ReadStoreWriter, UnitOfWork

log = logging.getLogger(__name__)

EventHandler = Callable[[UnitOfWork, RecordedEvent], None]


@dataclass(frozen=True)
class Projection:
    """name and version identify the read model; a new version rebuilds it from position 0."""

    name: str
    version: int
    collections: tuple[Collection, ...]
    handlers: Mapping[type[Any], EventHandler]

    def handles(self, event_type: type[Any]) -> bool:
        return event_type in self.handlers


class ProjectionRunner:
    def __init__(
        self,
        log_reader: EventLogReader,
        store: ReadStoreWriter,
        projections: Sequence[Projection],
        batch_size: int = 1000,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self._log = log_reader
        self._store = store
        self._projections = list(projections)
        self._batch_size = batch_size
        self._positions: dict[str, int] = {}

    def prepare(self) -> None:
        """Create missing read models and rebuild those whose version changed."""
        stored = self._store.checkpoints()
        for projection in self._projections:
            checkpoint = stored.get(projection.name)
            if checkpoint is None or checkpoint.version != projection.version:
                if checkpoint is not None:
                    log.info(
                        "projection %s changed from version %d to %d: rebuilding from position 0",
                        projection.name,
                        checkpoint.version,
                        projection.version,
                    )
                self._store.reset(projection.name, projection.version, projection.collections)
                self._positions[projection.name] = 0
            else:
                self._positions[projection.name] = checkpoint.position

    @property
    def positions(self) -> dict[str, int]:
        return dict(self._positions)

    def run_once(self) -> int:
        """Apply the next batch of events; returns how many new events it held (0 when idle)."""
        if len(self._positions) != len(self._projections):
            self.prepare()
        start = min(self._positions.values())
        events = self._log.read_all(start, self._batch_size)
        if not events:
            return 0
        applied: dict[str, int] = {}
        with self._store.transaction() as work:
            # The checkpoints stored with the rows are the authority: an event at or below one is
            # never applied again, whatever this runner remembers or the log reader hands over.
            stored = self._store.checkpoints()
            for projection in self._projections:
                checkpoint = stored.get(projection.name)
                done = max(self._positions[projection.name], checkpoint.position if checkpoint else 0)
                handlers = projection.handlers
                for event in events:
                    if event.position <= done:
                        continue
                    handler = handlers.get(type(event.data))
                    if handler is not None:
                        handler(work, event)
                    done = event.position
                work.set_checkpoint(projection.name, projection.version, done)
                applied[projection.name] = done
        self._positions.update(applied)
        return sum(1 for event in events if event.position > start)

    def run_until_idle(self) -> int:
        """Apply batches until the log has nothing new; returns the number of events read."""
        total = 0
        while count := self.run_once():
            total += count
        return total
