"""The read models: the order view (one document per order, listed by customer and by status), the
per-customer summary and the per-product sales. Each is a projection with its own checkpoint; the
summary and the sales keep their own small order lookups so neither depends on another projection's
progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from eventcore.events import RecordedEvent
from eventcore.projection import EventHandler, Projection
from eventcore.read_store import Collection, Index, UnitOfWork
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderShipped
from orders.order import OrderStatus


class OrderDocument(TypedDict):
    order_id: str
    customer_id: str
    items: list[list[Any]]  # [product_id, quantity, unit_price]
    status: str  # an OrderStatus value
    total: int
    version: int
    created_position: int  # orders the lists, newest first
    changed_position: int  # of the order's last event: what a customer's watch asks for
    created_at: int  # microseconds since the epoch; 0 means "not yet"
    confirmed_at: int
    shipped_at: int
    cancelled_at: int
    tracking_number: str
    cancel_reason: str


class CustomerDocument(TypedDict):
    customer_id: str
    order_count: int
    pending_count: int
    confirmed_count: int
    shipped_count: int
    cancelled_count: int
    total_value: int  # of non-cancelled orders
    last_order_at: int


ORDERS = Collection(
    "orders",
    indexes=(
        Index("by_customer", equals=("customer_id",), order_by="created_position"),
        Index("by_status", equals=("status",), order_by="created_position"),
        Index("by_customer_changes", equals=("customer_id",), order_by="changed_position"),
    ),
)
CUSTOMERS = Collection("customers")
CUSTOMER_ORDERS = Collection("customer_orders")  # order_id -> customer_id, status, total

ORDER_VIEW_NAME = "order_view"
CUSTOMER_SUMMARY_NAME = "customer_summary"


class ProjectionInconsistency(RuntimeError):
    """An event refers to an order its read model never saw: the log or the read model is damaged."""


def _existing(work: UnitOfWork, collection: Collection, key: str, event: RecordedEvent) -> Any:
    document = work.get(collection, key)
    if document is None:
        raise ProjectionInconsistency(
            f"event {event.type} at position {event.position} refers to order {key!r},"
            f" unknown to collection {collection.name}"
        )
    return document


# -- order view ---------------------------------------------------------------------------------


def _order_created(work: UnitOfWork, event: RecordedEvent) -> None:
    data: OrderCreated = event.data
    document: OrderDocument = {
        "order_id": data.order_id,
        "customer_id": data.customer_id,
        "items": [[i.product_id, i.quantity, i.unit_price] for i in data.items],
        "status": OrderStatus.PENDING.value,
        "total": data.total,
        "version": event.stream_version,
        "created_position": event.position,
        "changed_position": event.position,
        "created_at": event.recorded_at_us,
        "confirmed_at": 0,
        "shipped_at": 0,
        "cancelled_at": 0,
        "tracking_number": "",
        "cancel_reason": "",
    }
    work.put(ORDERS, data.order_id, dict(document))


def _order_moved(status: OrderStatus, moment: str, details: Callable[[Any], dict[str, Any]]) -> EventHandler:
    """A handler that moves the order to `status`, stamps `moment` and copies the event's details."""

    def moved(work: UnitOfWork, event: RecordedEvent) -> None:
        document = _existing(work, ORDERS, event.data.order_id, event)
        document.update(
            details(event.data),
            status=status.value,
            version=event.stream_version,
            changed_position=event.position,
        )
        document[moment] = event.recorded_at_us
        work.put(ORDERS, event.data.order_id, document)

    return moved


_order_confirmed = _order_moved(OrderStatus.CONFIRMED, "confirmed_at", lambda data: {})
_order_shipped = _order_moved(
    OrderStatus.SHIPPED, "shipped_at", lambda data: {"tracking_number": data.tracking_number}
)
_order_cancelled = _order_moved(
    OrderStatus.CANCELLED, "cancelled_at", lambda data: {"cancel_reason": data.reason}
)


def _order_view_prefetch(work: UnitOfWork, events: Sequence[RecordedEvent]) -> None:
    work.prefetch(ORDERS, [e.data.order_id for e in events if type(e.data) is not OrderCreated])


ORDER_VIEW = Projection(
    ORDER_VIEW_NAME,
    version=2,  # 2: changed_position and its index by customer
    collections=(ORDERS,),
    handlers={
        OrderCreated: _order_created,
        OrderConfirmed: _order_confirmed,
        OrderShipped: _order_shipped,
        OrderCancelled: _order_cancelled,
    },
    prefetch=_order_view_prefetch,
)


# -- customer summary ---------------------------------------------------------------------------

_COUNTER = {
    OrderStatus.PENDING.value: "pending_count",
    OrderStatus.CONFIRMED.value: "confirmed_count",
    OrderStatus.SHIPPED.value: "shipped_count",
    OrderStatus.CANCELLED.value: "cancelled_count",
}


def empty_customer(customer_id: str) -> CustomerDocument:
    return {
        "customer_id": customer_id,
        "order_count": 0,
        "pending_count": 0,
        "confirmed_count": 0,
        "shipped_count": 0,
        "cancelled_count": 0,
        "total_value": 0,
        "last_order_at": 0,
    }


def _customer_order_created(work: UnitOfWork, event: RecordedEvent) -> None:
    data: OrderCreated = event.data
    work.put(
        CUSTOMER_ORDERS,
        data.order_id,
        {"customer_id": data.customer_id, "status": OrderStatus.PENDING.value, "total": data.total},
    )
    summary = work.get(CUSTOMERS, data.customer_id) or dict(empty_customer(data.customer_id))
    summary["order_count"] += 1
    summary["pending_count"] += 1
    summary["total_value"] += data.total
    summary["last_order_at"] = max(summary["last_order_at"], event.recorded_at_us)
    work.put(CUSTOMERS, data.customer_id, summary)


def _status_changer(status: OrderStatus) -> EventHandler:
    def moved(work: UnitOfWork, event: RecordedEvent) -> None:
        order = _existing(work, CUSTOMER_ORDERS, event.data.order_id, event)
        summary = _existing(work, CUSTOMERS, order["customer_id"], event)
        summary[_COUNTER[order["status"]]] -= 1
        summary[_COUNTER[status.value]] += 1
        if status is OrderStatus.CANCELLED:
            summary["total_value"] -= order["total"]
        order["status"] = status.value
        work.put(CUSTOMER_ORDERS, event.data.order_id, order)
        work.put(CUSTOMERS, order["customer_id"], summary)

    return moved


def _customer_summary_prefetch(work: UnitOfWork, events: Sequence[RecordedEvent]) -> None:
    """The orders that move, then the summaries of their customers and of the new orders'."""
    moved = [e.data.order_id for e in events if type(e.data) is not OrderCreated]
    work.prefetch(CUSTOMER_ORDERS, moved)
    customers = {e.data.customer_id for e in events if type(e.data) is OrderCreated}
    for order_id in moved:
        order = work.get(CUSTOMER_ORDERS, order_id)
        if order is not None:
            customers.add(order["customer_id"])
    work.prefetch(CUSTOMERS, customers)


CUSTOMER_SUMMARY = Projection(
    CUSTOMER_SUMMARY_NAME,
    version=1,
    collections=(CUSTOMERS, CUSTOMER_ORDERS),
    handlers={
        OrderCreated: _customer_order_created,
        OrderConfirmed: _status_changer(OrderStatus.CONFIRMED),
        OrderShipped: _status_changer(OrderStatus.SHIPPED),
        OrderCancelled: _status_changer(OrderStatus.CANCELLED),
    },
    prefetch=_customer_summary_prefetch,
)


# -- product sales ------------------------------------------------------------------------------


class ProductDocument(TypedDict):
    product_id: str
    units_sold: int  # exact sums over non-cancelled orders (answers saturate them)
    revenue: int
    order_count: int
    revenue_rank: int  # revenue capped to what an SQL integer holds: the top-products index


RANK_MAX = 2**63 - 1

PRODUCTS = Collection("products", indexes=(Index("by_revenue", equals=(), order_by="revenue_rank"),))
PRODUCT_ORDERS = Collection("product_orders")  # order_id -> its lines per product, while not cancelled

PRODUCT_SALES_NAME = "product_sales"


def empty_product(product_id: str) -> ProductDocument:
    return {"product_id": product_id, "units_sold": 0, "revenue": 0, "order_count": 0, "revenue_rank": 0}


def _order_lines(data: OrderCreated) -> dict[str, list[int]]:
    """product_id -> [units, revenue] of one order, an item repeated in it counted once per order."""
    lines: dict[str, list[int]] = {}
    for item in data.items:
        line = lines.setdefault(item.product_id, [0, 0])
        line[0] += item.quantity
        line[1] += item.quantity * item.unit_price
    return lines


def _add_sales(work: UnitOfWork, lines: dict[str, list[int]], sign: int) -> None:
    for product_id, (units, revenue) in lines.items():
        product: Any = work.get(PRODUCTS, product_id) or dict(empty_product(product_id))
        product["units_sold"] += sign * units
        product["revenue"] += sign * revenue
        product["order_count"] += sign
        product["revenue_rank"] = min(product["revenue"], RANK_MAX)
        if product["order_count"] == 0:
            work.delete(PRODUCTS, product_id)  # back to "no sales": all zeros, not listed
        else:
            work.put(PRODUCTS, product_id, product)


def _product_order_created(work: UnitOfWork, event: RecordedEvent) -> None:
    lines = _order_lines(event.data)
    work.put(PRODUCT_ORDERS, event.data.order_id, {"lines": lines})
    _add_sales(work, lines, +1)


def _product_order_cancelled(work: UnitOfWork, event: RecordedEvent) -> None:
    order = _existing(work, PRODUCT_ORDERS, event.data.order_id, event)
    _add_sales(work, order["lines"], -1)
    work.delete(PRODUCT_ORDERS, event.data.order_id)


def _product_sales_prefetch(work: UnitOfWork, events: Sequence[RecordedEvent]) -> None:
    """The cancelled orders' lines, then every product a new or a cancelled order sells."""
    cancelled = [e.data.order_id for e in events if type(e.data) is OrderCancelled]
    work.prefetch(PRODUCT_ORDERS, cancelled)
    products = {item.product_id for e in events if type(e.data) is OrderCreated for item in e.data.items}
    for order_id in cancelled:
        order = work.get(PRODUCT_ORDERS, order_id)
        if order is not None:
            products.update(order["lines"])
    work.prefetch(PRODUCTS, products)


PRODUCT_SALES = Projection(
    PRODUCT_SALES_NAME,
    version=1,
    collections=(PRODUCTS, PRODUCT_ORDERS),
    handlers={OrderCreated: _product_order_created, OrderCancelled: _product_order_cancelled},
    prefetch=_product_sales_prefetch,
)

PROJECTIONS = (ORDER_VIEW, CUSTOMER_SUMMARY, PRODUCT_SALES)
