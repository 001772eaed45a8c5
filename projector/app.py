"""The projector's loop: wait for the event store, then apply batches until told to stop.

Each batch commits with the projections' checkpoints, so stopping (or being killed) between or
even inside batches loses nothing and applies nothing twice. An idle projector sleeps until the
event store announces a commit (eventcore/sqlite/changes.py), looking once a second at most.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from eventcore.changes import ChangeSignal
from eventcore.errors import Unavailable
from eventcore.event_store import EventLogReader
from eventcore.projection import DEFAULT_MAX_PARKED, ProjectionRunner
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
            runner = ProjectionRunner(
                log_reader, store, PROJECTIONS, settings.batch_size, max_parked=settings.max_parked
            )
            runner.prepare()
            log.info("projecting from positions %s", runner.positions)
            follow(runner, settings, stop, changes)
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


def follow(
    runner: ProjectionRunner, settings: Settings, stop: threading.Event, changes: ChangeSignal
) -> None:
    """Apply batches until stop is set; a failing batch is logged and retried, never skipped."""
    while not stop.is_set():
        try:
            applied = runner.run_once()
        except Unavailable as error:
            log.error("batch after positions %s failed, retrying: %s", runner.positions, error)
            stop.wait(settings.retry_interval)
            continue
        if applied == 0:
            changes.wait(settings.idle_look)
