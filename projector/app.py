"""The projector's loop: wait for the event store, then apply batches until told to stop.

Each batch commits with the projections' checkpoints, so stopping (or being killed) between or
even inside batches loses nothing and applies nothing twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from eventcore.errors import Unavailable
from eventcore.projection import ProjectionRunner
from eventcore.sqlite.event_store import SQLiteEventLogReader
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import order_codec
from orders.projections import PROJECTIONS, ProjectionInconsistency

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    event_store: Path
    read_db: Path
    batch_size: int = 5000
    poll_interval: float = 0.002  # seconds between looks at an idle log
    retry_interval: float = 1.0  # seconds before retrying after a failed batch


def wait_for_event_store(path: Path, stop: threading.Event, poll: float) -> SQLiteEventLogReader | None:
    """Open the event store read-only once the write service has created it (None if stopped)."""
    announced = False
    while not stop.is_set():
        try:
            return SQLiteEventLogReader.open(path, order_codec())
        except FileNotFoundError as missing:
            if not announced:
                log.info("waiting for the write service to create it: %s", missing)
                announced = True
        stop.wait(max(poll, 0.05))
    return None


def run(settings: Settings, stop: threading.Event) -> None:
    store = SQLiteReadStoreWriter.open(settings.read_db)
    try:
        log_reader = wait_for_event_store(settings.event_store, stop, settings.poll_interval)
        if log_reader is None:
            return
        try:
            runner = ProjectionRunner(log_reader, store, PROJECTIONS, settings.batch_size)
            runner.prepare()
            log.info("projecting from positions %s", runner.positions)
            follow(runner, settings, stop)
            log.info("stopped at positions %s", runner.positions)
        finally:
            log_reader.close()
    finally:
        store.close()


def follow(runner: ProjectionRunner, settings: Settings, stop: threading.Event) -> None:
    """Apply batches until stop is set; a failing batch is logged and retried, never skipped."""
    while not stop.is_set():
        try:
            applied = runner.run_once()
        except (Unavailable, ProjectionInconsistency) as error:
            log.error("batch after positions %s failed, retrying: %s", runner.positions, error)
            stop.wait(settings.retry_interval)
            continue
        if applied == 0:
            stop.wait(settings.poll_interval)
