"""Each projection's status as an operator sees it: where it is, how far behind, and its state.

One function computes it from a read-store snapshot and the event store's head, so the query
service's GetProjectionStatus, its health check and the metrics gauges all say the same thing.
"""

from __future__ import annotations

from typing import NamedTuple

from eventcore.read_store import WHOLE_PROJECTION, ReadStoreReader
from eventcore.rebuild import is_shadow, live_name

RUNNING = "running"
CATCHING_UP = "catching_up"
REBUILDING = "rebuilding"
DEGRADED = "degraded"
FAILED = "failed"


class ProjectionStatus(NamedTuple):
    name: str
    version: int
    position: int
    updated_at_us: int
    lag: int  # events behind the head
    state: str  # running, catching_up, rebuilding, degraded, failed
    parked_streams: int
    last_error: str


def projection_statuses(reader: ReadStoreReader, head: int) -> list[ProjectionStatus]:
    """The status of every projection in the read store, by name.

    failed: it stopped as a whole (too many parked streams); degraded: some streams are parked;
    rebuilding: a replacement is being built beside it; catching_up: behind the head; running: at
    the head. A rebuild's shadow is not listed on its own.
    """
    with reader.snapshot() as view:
        checkpoints = view.checkpoints()
        parked = view.parked_streams()
    rebuilding = {live_name(c.name) for c in checkpoints if is_shadow(c.name)}
    statuses = []
    for c in checkpoints:
        if is_shadow(c.name):  # a rebuild's shadow shows as its projection's state
            continue
        mine = [p for p in parked if p.projection == c.name]
        streams = sum(1 for p in mine if p.stream_id != WHOLE_PROJECTION)
        lag = max(head - c.position, 0)
        if any(p.stream_id == WHOLE_PROJECTION for p in mine):
            state = FAILED
        elif mine:
            state = DEGRADED
        elif c.name in rebuilding:
            state = REBUILDING
        else:
            state = RUNNING if lag == 0 else CATCHING_UP
        last = max(mine, key=lambda p: p.parked_at_us, default=None)
        error = (
            ""
            if last is None
            else f"position {last.position}, stream {last.stream_id or '(all)'}: {last.error}"
        )
        statuses.append(
            ProjectionStatus(c.name, c.version, c.position, c.updated_at_us, lag, state, streams, error)
        )
    return statuses
