"""The projector's loop: wait for the event store, then apply batches until told to stop.

Each batch commits with the projections' checkpoints, so stopping (or being killed) between or
even inside batches loses nothing and applies nothing twice. An idle projector sleeps until the
event store announces a commit (eventcore/sqlite/changes.py), looking once a second at most.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from eventcore.changes import ChangeSignal
from eventcore.errors import Unavailable
from eventcore.event_store import EventLogReader
from eventcore.projection import DEFAULT_MAX_PARKED, Projection, ProjectionRunner
from eventcore.read_store import ReadStoreWriter
from eventcore.rebuild import Rebuild, skips_of
from eventcore.storage import Location, open_changes, open_event_log_reader, open_read_store_writer
from orders.events import order_codec
from orders.projections import PROJECTIONS
from servicekit.metrics import Metrics, read_side_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    event_store: Location
    read_db: Location
    batch_size: int = 5000
    idle_look: float = 1.0  # seconds an idle projector waits for an announcement before it looks
    retry_interval: float = 1.0  # seconds before retrying after a failed batch
    metrics_listen: str = ""  # HOST:PORT of /metrics; empty: no metrics
    max_parked: int = DEFAULT_MAX_PARKED  # parked streams beyond which a projection fails


def wait_for_event_store(
    path: Location, stop: threading.Event, changes: ChangeSignal, idle_look: float
) -> EventLogReader | None:
    """Open the event store read-only once the write service has created it (None if stopped)."""
    announced = False
    while not stop.is_set():
        try:
            return open_event_log_reader(path, order_codec().deferred())
        except FileNotFoundError as missing:
            if not announced:
                log.info("waiting for the write service to create it: %s", missing)
                announced = True
        changes.wait(idle_look)
    return None


def run(settings: Settings, stop: threading.Event) -> None:
    metrics = Metrics()
    if settings.metrics_listen:
        metrics.store_gauges(lambda: read_side_state(settings.read_db, settings.event_store, order_codec()))
        metrics.start(settings.metrics_listen)
    try:
        project(settings, stop)
    finally:
        metrics.stop()


def project(settings: Settings, stop: threading.Event) -> None:
    store = open_read_store_writer(settings.read_db, stop)  # PostgreSQL: waits to be the active one
    if store is None:
        return
    source = open_changes(settings.event_store)
    changes = source.signal()
    threading.Thread(target=_wake_on_stop, args=(stop, changes), name="stop-relay", daemon=True).start()
    try:
        log_reader = wait_for_event_store(settings.event_store, stop, changes, settings.idle_look)
        if log_reader is None:
            return
        try:
            stored = store.checkpoints()
            changed = [p for p in PROJECTIONS if p.name in stored and stored[p.name].version != p.version]
            rebuilds = [
                Rebuild(log_reader, store, p, settings.batch_size, settings.max_parked, skips_of(store))
                for p in changed
            ]
            for p in changed:
                log.info(
                    "projection %s changed from version %d to %d: rebuilding it from position 0 beside"
                    " the old one, which keeps answering until the new one has caught up",
                    p.name,
                    stored[p.name].version,
                    p.version,
                )
            runner = _runner(log_reader, store, settings, [p for p in PROJECTIONS if p not in changed])
            log.info("projecting from positions %s", runner.positions)
            runner = follow(runner, settings, stop, changes, rebuilds)
            log.info("stopped at positions %s", runner.positions)
        finally:
            log_reader.close()
    finally:
        source.close()
        store.close()


def _wake_on_stop(stop: threading.Event, changes: ChangeSignal) -> None:
    """Ends the follower's wait as soon as it is told to stop."""
    stop.wait()
    changes.wake()


def _runner(
    log_reader: EventLogReader, store: ReadStoreWriter, settings: Settings, projections: list[Projection]
) -> ProjectionRunner:
    runner = ProjectionRunner(
        log_reader, store, projections, settings.batch_size, max_parked=settings.max_parked
    )
    runner.prepare()
    return runner


def follow(
    runner: ProjectionRunner,
    settings: Settings,
    stop: threading.Event,
    changes: ChangeSignal,
    rebuilds: Sequence[Rebuild] = (),
) -> ProjectionRunner:
    """Apply batches until stop is set; a failing batch is logged and retried, never skipped.

    Rebuilds (of projections whose version changed) take a batch after each live batch; once the
    last has swapped in, the runner takes every projection again. Returns the runner in use.
    """
    pending = list(rebuilds)
    while not stop.is_set():
        try:
            applied = runner.run_once()
            for rebuild in list(pending):
                before = rebuild.position
                if rebuild.step():
                    pending.remove(rebuild)
                    if not pending:
                        runner = _runner(runner.log_reader, runner.store, settings, list(PROJECTIONS))
                applied += rebuild.position - before
        except Unavailable as error:
            log.error("batch after positions %s failed, retrying: %s", runner.positions, error)
            stop.wait(settings.retry_interval)
            continue
        if applied == 0:
            changes.wait(settings.idle_look)
    return runner
