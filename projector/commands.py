"""The projector's operator commands: parked, retry, skip, verify, rebuild.

Each returns its exit code: 0 on success, 1 on a finding (a parked stream, a difference) or a
failure. `parked` and `verify` only read; `retry` and `skip` write beside a running projector
(on SQLite through the read database's maintenance lock, so two commands never interleave).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from eventcore import parking
from eventcore.event_store import EventLogReader
from eventcore.projection import Projection
from eventcore.read_store import WHOLE_PROJECTION, ReadStoreWriter
from eventcore.rebuild import Rebuild, skips_of
from eventcore.storage import (
    Location,
    open_event_log_reader,
    open_read_store_maintainer,
    open_read_store_reader,
)
from eventcore.timestamps import format_timestamp
from eventcore.verify import verify
from orders.events import order_codec

log = logging.getLogger(__name__)


class UnknownProjection(ValueError):
    """A --projection that names no projection of this code."""


def chosen(projections: Sequence[Projection], name: str | None) -> list[Projection]:
    if name is None:
        return list(projections)
    found = [p for p in projections if p.name == name]
    if not found:
        known = ", ".join(p.name for p in projections)
        raise UnknownProjection(f"no projection named {name!r} (there are: {known})")
    return found


@contextmanager
def _log_reader(location: Location) -> Iterator[EventLogReader]:
    reader = open_event_log_reader(location, order_codec().deferred())
    try:
        yield reader
    finally:
        reader.close()


@contextmanager
def _maintainer(location: Location) -> Iterator[ReadStoreWriter]:
    store = open_read_store_maintainer(location)
    try:
        yield store
    finally:
        store.close()


def parked(
    read_db: Location, projections: Sequence[Projection], name: str | None, out: TextIO = sys.stdout
) -> int:
    """Print every parked stream (projection, stream, position, event type, since, error); 1 if any."""
    names = {p.name for p in chosen(projections, name)}
    reader = open_read_store_reader(read_db)
    try:
        with reader.snapshot() as view:
            found = [p for p in view.parked_streams() if p.projection in names]
    finally:
        reader.close()
    for p in found:
        stream = p.stream_id if p.stream_id != WHOLE_PROJECTION else "(whole projection)"
        since = format_timestamp(p.parked_at_us)
        out.write(f"{p.projection}\t{stream}\t{p.position}\t{p.event_type}\t{since}\t{p.error}\n")
    if not found:
        out.write("no parked streams\n")
    return 1 if found else 0


def retry(
    event_store: Location,
    read_db: Location,
    projections: Sequence[Projection],
    name: str,
    stream_id: str | None,
    out: TextIO = sys.stdout,
) -> int:
    """Apply the parked events again; 1 when one fails again (it stays parked) or none was parked."""
    (projection,) = chosen(projections, name)
    with _log_reader(event_store) as log_reader, _maintainer(read_db) as store:
        resolutions = parking.retry(log_reader, store, projection, stream_id)
    return _report(resolutions, "retried", out)


def skip(
    event_store: Location,
    read_db: Location,
    projections: Sequence[Projection],
    name: str,
    stream_id: str,
    out: TextIO = sys.stdout,
) -> int:
    """Drop the stream's failing event (recorded in the read database) and apply the rest."""
    (projection,) = chosen(projections, name)
    with _log_reader(event_store) as log_reader, _maintainer(read_db) as store:
        resolution = parking.skip(log_reader, store, projection, stream_id)
    return _report([resolution], "skipped its failing event", out)


def rebuild(
    event_store: Location,
    read_db: Location,
    projections: Sequence[Projection],
    name: str | None,
    batch_size: int,
    max_parked: int,
    stopped: Callable[[], bool],
    out: TextIO = sys.stdout,
) -> int:
    """Rebuild each chosen projection beside the live one and swap it in; 1 if stopped first."""
    selected = chosen(projections, name)
    report = ProgressReport(sys.stderr.isatty())
    try:
        with _log_reader(event_store) as log_reader, _maintainer(read_db) as store:
            skipped = skips_of(store)
            for projection in selected:
                started = time.monotonic()
                work = Rebuild(log_reader, store, projection, batch_size, max_parked, skipped)
                if not work.run(report, stopped):
                    out.write(
                        f"{projection.name}: stopped before the end; the live read model is unchanged\n"
                    )
                    return 1
                took = time.monotonic() - started
                out.write(f"{projection.name}: rebuilt from position 0 to {work.position} in {took:.1f} s\n")
    finally:
        report.close()
    return 0


def _report(resolutions: list[parking.Resolution], done: str, out: TextIO) -> int:
    if not resolutions:
        out.write("no parked streams\n")
        return 1
    failed = 0
    for r in resolutions:
        stream = r.stream_id or "(whole projection)"
        if r.parked_again is None:
            out.write(f"{r.projection}\t{stream}\t{done}, {r.applied} events applied\n")
        else:
            failed += 1
            again = r.parked_again
            out.write(f"{r.projection}\t{stream}\tparked again at position {again.position}: {again.error}\n")
    return 1 if failed else 0


def verify_command(
    event_store: Location,
    read_db: Location,
    projections: Sequence[Projection],
    name: str | None,
    batch_size: int,
    out: TextIO = sys.stdout,
) -> int:
    """Print every difference between the live read models and a replay; 1 if there is any."""
    selected = chosen(projections, name)
    reader = open_read_store_reader(read_db)
    try:
        with _log_reader(event_store) as log_reader:
            verdicts = verify(log_reader, reader, selected, batch_size)
    finally:
        reader.close()
    differences = 0
    for verdict in verdicts:
        for difference in verdict.differences:
            out.write(difference.describe() + "\n")
        differences += len(verdict.differences)
        state = "OK" if not verdict.differences else f"{len(verdict.differences)} differences"
        out.write(f"{verdict.projection}: compared at position {verdict.position}: {state}\n")
    return 1 if differences else 0


class ProgressReport:
    """Progress of long work: a bar with rate and ETA on a terminal (tqdm), else a log line every
    `interval` seconds."""

    def __init__(self, terminal: bool, interval: float = 5.0) -> None:
        self._terminal = terminal
        self._interval = interval
        self._bars: dict[str, Any] = {}
        self._last_line = time.monotonic()
        self._started = time.monotonic()

    def __call__(self, name: str, position: int, head: int) -> None:
        if self._terminal:
            from tqdm import tqdm  # type: ignore[import-untyped]

            bar = self._bars.get(name)
            if bar is None:
                bar = self._bars[name] = tqdm(total=head, desc=name, unit="ev", unit_scale=True)
            bar.total = max(head, position)
            bar.update(position - bar.n)
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            rate = position / max(now - self._started, 1e-9)
            log.info("rebuilding %s: position %d of %d (%.0f events/s)", name, position, head, rate)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
