"""Each projection's status as an operator sees it: where it is, how far behind, and its state.

One function computes it from a read-store snapshot and the event store's head, so the query
service's GetProjectionStatus, its health check and the metrics gauges all say the same thing.
"""

from __future__ import annotations

from typing import NamedTuple

from eventcore.read_store import ReadStoreReader

RUNNING = "running"
CATCHING_UP = "catching_up"


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
    """The status of every projection in the read store, by name."""
    with reader.snapshot() as view:
        checkpoints = view.checkpoints()
    statuses = []
    for c in checkpoints:
        lag = max(head - c.position, 0)
        statuses.append(
            ProjectionStatus(
                c.name,
                c.version,
                c.position,
                c.updated_at_us,
                lag,
                RUNNING if lag == 0 else CATCHING_UP,
                0,
                "",
            )
        )
    return statuses
