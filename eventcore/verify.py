"""Verification of read models: replay the log into scratch (in-memory) storage up to the position the
live read model has reached, and compare the two row by row.

The live side is read from one snapshot, so its rows and its checkpoint belong together. The replay
runs the projection's current code with the same skipped events the operator recorded, so a live
read model that is right has no difference at all, parked streams included; a row edited, deleted
or added by hand, or a handler whose output changed without a new version, shows up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from eventcore.event_store import EventLogReader
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import Projection, ProjectionRunner
from eventcore.read_store import ReadStoreReader, ReadView


class Difference(NamedTuple):
    projection: str
    collection: str  # or "parked_streams"
    key: str
    live: Any  # None: missing in the live read model
    replayed: Any  # None: missing in the replay

    def describe(self) -> str:
        if self.live is None:
            return (
                f"{self.projection}: {self.collection} {self.key!r} is missing (replay has {self.replayed})"
            )
        if self.replayed is None:
            return (
                f"{self.projection}: {self.collection} {self.key!r} should not exist (live has {self.live})"
            )
        where = f"{self.projection}: {self.collection} {self.key!r}"
        return f"{where} differs: live {self.live} != replayed {self.replayed}"


class Verdict(NamedTuple):
    projection: str
    position: int  # where both sides were compared
    differences: list[Difference]


def _contents(view: ReadView, projection: Projection) -> dict[str, dict[str, Any]]:
    contents: dict[str, dict[str, Any]] = {c.name: dict(view.scan(c)) for c in projection.collections}
    contents["parked_streams"] = {
        p.stream_id: p.position for p in view.parked_streams() if p.projection == projection.name
    }
    return contents


def verify(
    log_reader: EventLogReader,
    live: ReadStoreReader,
    projections: Sequence[Projection],
    batch_size: int = 5000,
) -> list[Verdict]:
    """Compare each projection with a replay of the log at the live checkpoint's position."""
    with live.snapshot() as view:
        positions = {c.name: c.position for c in view.checkpoints()}
        skipped = {(k.projection, k.position) for k in view.skipped_events()}
        live_contents = {p.name: _contents(view, p) for p in projections if p.name in positions}
    verdicts = []
    for projection in projections:
        if projection.name not in positions:
            continue
        position = positions[projection.name]
        scratch = InMemoryReadStoreWriter()
        runner = ProjectionRunner(
            log_reader, scratch, [projection], batch_size, skipped=skipped, report_unhandled=False
        )
        runner.prepare()
        runner.run_until_idle(until=position)
        with scratch.reader().snapshot() as replay:
            replayed = _contents(replay, projection)
        differences = []
        for collection, rows in live_contents[projection.name].items():
            expected = replayed[collection]
            for key in sorted(rows.keys() | expected.keys()):
                if rows.get(key) != expected.get(key):
                    differences.append(
                        Difference(projection.name, collection, key, rows.get(key), expected.get(key))
                    )
        verdicts.append(Verdict(projection.name, position, differences))
    return verdicts
