"""The deterministic shape of the data every part of the harness agrees on.

Fixtures, load clients, the no-op server and the `eventsourcing` peer all derive ids, items and the
order lifecycle from here, so a figure measured on one side is about the same data as on the other.
Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

ORDERS_PER_CUSTOMER = 10
"""Ten orders per customer: `ListOrdersByCustomer` returns about ten rows, a typical first page."""

# (product_id, quantity, unit_price): a few variants so totals and payload sizes are not all equal.
ITEM_VARIANTS: tuple[tuple[tuple[str, int, int], ...], ...] = (
    (("p-1001", 1, 1999), ("p-2002", 2, 450)),
    (("p-3003", 3, 1250),),
    (("p-1001", 1, 1999), ("p-4004", 1, 89900), ("p-5005", 5, 100)),
    (("p-2002", 2, 450), ("p-6006", 1, 15000)),
)


def order_id(index: int) -> str:
    """The id of the index-th fixture order (zero-padded so ids sort like indexes)."""
    return f"o{index:07d}"


def customer_id(index: int) -> str:
    """The id of the index-th customer."""
    return f"c{index:06d}"


def customer_of(order_index: int, customers: int) -> str:
    """Orders are spread round-robin over the customers."""
    return customer_id(order_index % customers)


def customers_for(orders: int) -> int:
    """How many customers a data set of `orders` orders has."""
    return max(1, orders // ORDERS_PER_CUSTOMER)


def items_of(order_index: int) -> tuple[tuple[str, int, int], ...]:
    return ITEM_VARIANTS[order_index % len(ITEM_VARIANTS)]


def total_of(items: tuple[tuple[str, int, int], ...]) -> int:
    return sum(quantity * unit_price for _, quantity, unit_price in items)


def tracking_number(order_index: int) -> str:
    return f"TRK{order_index:010d}"


CANCEL_REASON = "customer changed their mind"


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One event of the lifecycle log: which order, its stream version, its type."""

    order_index: int
    stream_version: int
    type: str


# The lifecycle of an order by `index % 10`: 40% shipped, 20% confirmed, 10% confirmed then cancelled,
# 10% cancelled while pending, 20% left pending. Mean 2.3 events per order.
_LIFECYCLES: tuple[tuple[str, ...], ...] = (
    ("OrderCreated", "OrderConfirmed", "OrderShipped"),
    ("OrderCreated", "OrderConfirmed", "OrderShipped"),
    ("OrderCreated", "OrderConfirmed", "OrderShipped"),
    ("OrderCreated", "OrderConfirmed", "OrderShipped"),
    ("OrderCreated", "OrderConfirmed"),
    ("OrderCreated", "OrderConfirmed"),
    ("OrderCreated", "OrderConfirmed", "OrderCancelled"),
    ("OrderCreated", "OrderCancelled"),
    ("OrderCreated",),
    ("OrderCreated",),
)
_LAG = 3  # an order's k-th event is emitted 3*k steps after its creation, so streams interleave


def lifecycle(events: int) -> Iterator[PlannedEvent]:
    """Exactly `events` events of interleaved order lifecycles, in log order.

    At step i the log gets order i's creation, order i-3's second event and order i-6's third, so
    consecutive events mostly belong to different orders, as in a live system; and a projector has
    updates to apply to rows it inserted a little earlier, not only inserts.
    """
    emitted = 0
    step = 0
    while True:
        for version in (1, 2, 3):
            index = step - _LAG * (version - 1)
            if index < 0:
                continue
            plan = _LIFECYCLES[index % len(_LIFECYCLES)]
            if version > len(plan):
                continue
            yield PlannedEvent(index, version, plan[version - 1])
            emitted += 1
            if emitted == events:
                return
        step += 1
