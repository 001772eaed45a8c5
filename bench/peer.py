"""The peer: the same append and projection workload through the `eventsourcing` library (a bench-only extra).

Run as its own process, `python -m bench.peer --dir D --events N`; prints one JSON line. The workload
is `bench.workload.lifecycle`, the same interleaved create/confirm/ship/cancel log our catch-up
fixture holds, issued as commands on an event-sourced `Order` aggregate (one `save`, one transaction
each, SQLite's default `synchronous`, like our durable commands), then projected by the library's
idiom for SQLite: a `Projection` writing a view and its tracking record in one transaction, fed by
pulling notifications (its SQLite recorder has no subscriptions). The peer runs in-process, without
gRPC, so its append figure is an upper bound for any service built on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application  # type: ignore[import-not-found, unused-ignore]
from eventsourcing.dispatch import singledispatchmethod  # type: ignore[import-not-found, unused-ignore]
from eventsourcing.domain import Aggregate, event  # type: ignore[import-not-found, unused-ignore]
from eventsourcing.persistence import Tracking  # type: ignore[import-not-found, unused-ignore]
from eventsourcing.projection import Projection  # type: ignore[import-not-found, unused-ignore]
from eventsourcing.sqlite import SQLiteFactory, SQLiteTrackingRecorder  # type: ignore[import-not-found, unused-ignore]

from bench import workload

log = logging.getLogger(__name__)

PULL_BATCH = 500


class OrderError(Exception):
    """A transition the order's status does not allow."""


class Order(Aggregate):  # type: ignore[misc, unused-ignore]
    """The order aggregate, with the same lifecycle rules as ours; its event classes declared (typed)."""

    class Created(Aggregate.Created):  # type: ignore[misc, unused-ignore]
        order_id: str
        customer_id: str
        items: list[dict[str, Any]]
        total: int

    class Confirmed(Aggregate.Event):  # type: ignore[misc, unused-ignore]
        pass

    class Shipped(Aggregate.Event):  # type: ignore[misc, unused-ignore]
        tracking_number: str

    class Cancelled(Aggregate.Event):  # type: ignore[misc, unused-ignore]
        reason: str

    @staticmethod
    def create_id(order_id: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE_URL, f"/orders/{order_id}")

    @event(Created)  # type: ignore[untyped-decorator, unused-ignore]
    def __init__(self, order_id: str, customer_id: str, items: list[dict[str, Any]], total: int) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.items = items
        self.total = total
        self.status = "PENDING"

    def confirm(self) -> None:
        if self.status != "PENDING":
            raise OrderError(f"cannot confirm a {self.status} order")
        self._confirmed()

    def ship(self, tracking_number: str) -> None:
        if self.status != "CONFIRMED":
            raise OrderError(f"cannot ship a {self.status} order")
        self._shipped(tracking_number)

    def cancel(self, reason: str) -> None:
        if self.status not in ("PENDING", "CONFIRMED"):
            raise OrderError(f"cannot cancel a {self.status} order")
        self._cancelled(reason)

    @event(Confirmed)  # type: ignore[untyped-decorator, unused-ignore]
    def _confirmed(self) -> None:
        self.status = "CONFIRMED"

    @event(Shipped)  # type: ignore[untyped-decorator, unused-ignore]
    def _shipped(self, tracking_number: str) -> None:
        self.status = "SHIPPED"
        self.tracking_number = tracking_number

    @event(Cancelled)  # type: ignore[untyped-decorator, unused-ignore]
    def _cancelled(self, reason: str) -> None:
        self.status = "CANCELLED"
        self.cancel_reason = reason


class Orders(Application[UUID]):  # type: ignore[misc, unused-ignore]
    """Command methods: load (replaying the stream), decide, save."""

    name = "Orders"

    def create_order(self, order_id: str, customer_id: str, items: list[dict[str, Any]], total: int) -> None:
        self.save(Order(order_id=order_id, customer_id=customer_id, items=items, total=total))

    def _load(self, order_id: str) -> Any:
        return self.repository.get(Order.create_id(order_id))

    def confirm_order(self, order_id: str) -> None:
        order = self._load(order_id)
        order.confirm()
        self.save(order)

    def ship_order(self, order_id: str, tracking_number: str) -> None:
        order = self._load(order_id)
        order.ship(tracking_number)
        self.save(order)

    def cancel_order(self, order_id: str, reason: str) -> None:
        order = self._load(order_id)
        order.cancel(reason)
        self.save(order)


class OrdersView(SQLiteTrackingRecorder):  # type: ignore[misc, unused-ignore]
    """Orders and per-customer counters, each change written with its tracking record."""

    def construct_create_table_statements(self) -> list[str]:
        statements: list[str] = super().construct_create_table_statements()
        return [
            *statements,
            "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,"
            " status TEXT NOT NULL, total INTEGER NOT NULL, version INTEGER NOT NULL,"
            " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, created_at)",
            "CREATE TABLE IF NOT EXISTS customers (customer_id TEXT PRIMARY KEY,"
            " order_count INTEGER NOT NULL, open_count INTEGER NOT NULL, total_value INTEGER NOT NULL)",
        ]

    def created(self, order: Any, tracking: Any) -> None:
        at = order.timestamp.isoformat()
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO orders VALUES (?, ?, 'PENDING', ?, ?, ?, ?)",
                (order.order_id, order.customer_id, order.total, order.originator_version, at, at),
            )
            cursor.execute(
                "INSERT INTO customers VALUES (?, 1, 1, ?) ON CONFLICT (customer_id) DO UPDATE SET"
                " order_count = order_count + 1, open_count = open_count + 1,"
                " total_value = total_value + excluded.total_value",
                (order.customer_id, order.total),
            )
            self._insert_tracking(cursor, tracking)

    def changed(self, order_id: str, status: str, version: int, at: str, tracking: Any) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "UPDATE orders SET status = ?, version = ?, updated_at = ? WHERE order_id = ?",
                (status, version, at, order_id),
            )
            if status == "SHIPPED":
                cursor.execute(
                    "UPDATE customers SET open_count = open_count - 1 WHERE customer_id ="
                    " (SELECT customer_id FROM orders WHERE order_id = ?)",
                    (order_id,),
                )
            elif status == "CANCELLED":  # a cancelled order leaves the customer's total value
                cursor.execute(
                    "UPDATE customers SET open_count = open_count - 1, total_value = total_value -"
                    " (SELECT total FROM orders WHERE order_id = ?1)"
                    " WHERE customer_id = (SELECT customer_id FROM orders WHERE order_id = ?1)",
                    (order_id,),
                )
            self._insert_tracking(cursor, tracking)


class OrdersProjection(Projection[OrdersView]):  # type: ignore[misc, unused-ignore]
    """Maps each order event to one view change."""

    name = "orders_view"

    def __init__(self, view: OrdersView, order_ids: dict[UUID, str]) -> None:
        super().__init__(view)
        self._order_ids = order_ids  # aggregate id -> order id, learnt from Created events

    @singledispatchmethod  # type: ignore[untyped-decorator, unused-ignore]
    def process_event(self, domain_event: Any, tracking: Any) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register  # type: ignore[untyped-decorator, unused-ignore]
    def _(self, domain_event: Order.Created, tracking: Any) -> None:
        self._order_ids[domain_event.originator_id] = domain_event.order_id
        self.view.created(domain_event, tracking)

    @process_event.register  # type: ignore[untyped-decorator, unused-ignore]
    def _(self, domain_event: Order.Confirmed, tracking: Any) -> None:
        self._change(domain_event, "CONFIRMED", tracking)

    @process_event.register  # type: ignore[untyped-decorator, unused-ignore]
    def _(self, domain_event: Order.Shipped, tracking: Any) -> None:
        self._change(domain_event, "SHIPPED", tracking)

    @process_event.register  # type: ignore[untyped-decorator, unused-ignore]
    def _(self, domain_event: Order.Cancelled, tracking: Any) -> None:
        self._change(domain_event, "CANCELLED", tracking)

    def _change(self, domain_event: Any, status: str, tracking: Any) -> None:
        order_id = self._order_ids[domain_event.originator_id]
        at = domain_event.timestamp.isoformat()
        self.view.changed(order_id, status, domain_event.originator_version, at, tracking)


def append(app: Orders, events: int) -> dict[str, Any]:
    """Issue the lifecycle log as commands; total and create-only rates."""
    customers = workload.customers_for(max(1, events * 10 // 23))
    create_seconds = 0.0
    creates = 0
    started = time.perf_counter()
    for planned in workload.lifecycle(events):
        oid = workload.order_id(planned.order_index)
        if planned.type == "OrderCreated":
            variant = workload.items_of(planned.order_index)
            items = [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in variant]
            t0 = time.perf_counter()
            app.create_order(
                oid, workload.customer_of(planned.order_index, customers), items, workload.total_of(variant)
            )
            create_seconds += time.perf_counter() - t0
            creates += 1
        elif planned.type == "OrderConfirmed":
            app.confirm_order(oid)
        elif planned.type == "OrderShipped":
            app.ship_order(oid, workload.tracking_number(planned.order_index))
        else:
            app.cancel_order(oid, workload.CANCEL_REASON)
    seconds = time.perf_counter() - started
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "creates": creates,
        "creates_per_s": round(creates / create_seconds, 1) if create_seconds else 0.0,
    }


def project(app: Orders, view_path: Path) -> dict[str, Any]:
    """Pull every notification from position 0 and project it; events/s."""
    view = SQLiteFactory({"SQLITE_DBNAME": str(view_path)}).tracking_recorder(OrdersView)
    assert isinstance(view, OrdersView)
    projection = OrdersProjection(view, {})
    last = view.max_tracking_id(app.name) or 0
    processed = 0
    started = time.perf_counter()
    while notifications := app.recorder.select_notifications(start=last + 1, limit=PULL_BATCH):
        for notification in notifications:
            domain_event = app.mapper.to_domain_event(notification)
            projection.process_event(domain_event, Tracking(app.name, notification.id))
        last = notifications[-1].id
        processed += len(notifications)
    seconds = time.perf_counter() - started
    return {"events": processed, "seconds": round(seconds, 3), "events_per_s": round(processed / seconds, 1)}


def run(directory: Path, events: int) -> dict[str, Any]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(directory / "peer-events.db")}
    app = Orders(env=env)
    try:
        appended = append(app, events)
        projected = project(app, directory / "peer-view.db")
    finally:
        app.close()
    import eventsourcing  # type: ignore[import-not-found, unused-ignore]

    version = getattr(eventsourcing, "__version__", "")
    if not version:
        from importlib.metadata import version as installed

        version = installed("eventsourcing")
    synchronous = sqlite3.connect(":memory:").execute("PRAGMA synchronous").fetchone()[0]
    return {
        "library": f"eventsourcing {version}",
        "sqlite_synchronous_default": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(synchronous, "?"),
        "append": appended,
        "projection": projected,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="an empty directory for the peer's files")
    parser.add_argument("--events", type=int, default=20_000, help="events to append, then project")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(run(args.dir, args.events)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
