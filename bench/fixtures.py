"""Prebuilt event-store files, written straight into SQLite so that a million events take seconds.

The file is created by executing the service's own migration files
(`eventcore/sqlite/migrations/event_store`),
so the fixture cannot drift from the schema the write service creates; only the bulk insert is ours.
`synchronous=OFF` is fine here: a fixture that dies half-written is simply rebuilt.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from bench import workload

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "eventcore" / "sqlite" / "migrations" / "event_store"
BATCH = 50_000  # rows per transaction: large enough that commits do not matter

Row = tuple[int, str, int, str, int, str, str]

_BASE_SECONDS = 8 * 3600  # fixture events are 1 ms apart from 2026-11-26T08:00:00Z
_DAY = "2026-11-26"


def migration_files() -> list[Path]:
    """The numbered event-store migrations, in the order the service applies them."""
    files = sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no event-store migrations in {MIGRATIONS}")
    return files


def create_event_store(path: Path) -> None:
    """An empty event store exactly as the write service would create it (WAL, migrated)."""
    if path.exists():
        raise FileExistsError(path)
    files = migration_files()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        for migration in files:
            connection.executescript(migration.read_text())
        connection.execute(f"PRAGMA user_version = {len(files)}")
    finally:
        connection.close()


def recorded_at(position: int) -> str:
    """A distinct, increasing ISO-8601 UTC time per event, without datetime's cost."""
    micros = position * 1000
    seconds, fraction = divmod(micros, 1_000_000)
    seconds += _BASE_SECONDS
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{_DAY}T{hours:02d}:{minutes:02d}:{secs:02d}.{fraction:06d}Z"


def _metadata(position: int) -> str:
    return f'{{"event_id":"{uuid.uuid4()}","command_id":"","recorded_at":"{recorded_at(position)}"}}'


_ITEMS_JSON = [
    json.dumps(
        [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in variant], separators=(",", ":")
    )
    for variant in workload.ITEM_VARIANTS
]
_TOTALS = [workload.total_of(variant) for variant in workload.ITEM_VARIANTS]


def payload(event: workload.PlannedEvent, customers: int) -> str:
    # Ids are plain ASCII, so string templates give the same JSON as json.dumps, several times faster.
    oid = workload.order_id(event.order_index)
    if event.type == "OrderCreated":
        variant = event.order_index % len(_ITEMS_JSON)
        cid = workload.customer_of(event.order_index, customers)
        return (
            f'{{"order_id":"{oid}","customer_id":"{cid}","items":{_ITEMS_JSON[variant]},'
            f'"total":{_TOTALS[variant]}}}'
        )
    if event.type == "OrderConfirmed":
        return f'{{"order_id":"{oid}"}}'
    if event.type == "OrderShipped":
        return f'{{"order_id":"{oid}","tracking_number":"{workload.tracking_number(event.order_index)}"}}'
    if event.type == "OrderCancelled":
        return f'{{"order_id":"{oid}","reason":"{workload.CANCEL_REASON}"}}'
    raise ValueError(event.type)


def rows(events: Iterable[workload.PlannedEvent], customers: int) -> Iterator[Row]:
    """Event-store rows for planned events, positions 1, 2, 3, ..."""
    for position, event in enumerate(events, start=1):
        yield (
            position,
            "order-" + workload.order_id(event.order_index),
            event.stream_version,
            event.type,
            1,
            payload(event, customers),
            _metadata(position),
        )


def created_only(orders: int) -> Iterator[workload.PlannedEvent]:
    """One OrderCreated per order: n events, n orders in the read model."""
    for index in range(orders):
        yield workload.PlannedEvent(index, 1, "OrderCreated")


def write_rows(path: Path, source: Iterable[Row]) -> int:
    """Bulk-insert rows in large transactions; returns how many were written."""
    connection = sqlite3.connect(path, isolation_level=None)
    written = 0
    try:
        connection.execute("PRAGMA synchronous=OFF")
        iterator = iter(source)
        while chunk := list(itertools.islice(iterator, BATCH)):
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", chunk)
            connection.execute("COMMIT")
            written += len(chunk)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return written


Plan = tuple[Iterator[workload.PlannedEvent], int]  # the events, and how many customers they share


def orders_plan(orders: int) -> Plan:
    """`orders` OrderCreated events, one per order."""
    return created_only(orders), workload.customers_for(orders)


def lifecycle_plan(events: int) -> Plan:
    """`events` interleaved lifecycle events (create, confirm, ship, cancel)."""
    # ~2.3 events per order, so about events/2.3 orders; customers sized from that.
    return workload.lifecycle(events), workload.customers_for(max(1, events * 10 // 23))


def build_orders_store(path: Path, orders: int) -> int:
    """An event store holding `orders` OrderCreated events (one per order); returns the head position."""
    return _build(path, *orders_plan(orders), f"{orders} orders")


def build_lifecycle_store(path: Path, events: int) -> int:
    """An event store of `events` interleaved lifecycle events; returns the head position."""
    return _build(path, *lifecycle_plan(events), f"{events} lifecycle events")


def _build(path: Path, events: Iterable[workload.PlannedEvent], customers: int, what: str) -> int:
    started = time.perf_counter()
    create_event_store(path)
    written = write_rows(path, rows(events, customers))
    # Written with synchronous=OFF: flush it now, or the services' first fsyncs pay for the fixture.
    os.sync()
    log.info("fixture %s: %s in %.1f s", path.name, what, time.perf_counter() - started)
    return written
