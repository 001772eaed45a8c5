"""The order queries, their input rules and their handlers over the read models."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, TypedDict

from eventcore.errors import FieldViolation, InvalidArgument, NotFound
from eventcore.query_bus import QueryBus, QueryHandler
from eventcore.read_store import Cursor, ReadView
from orders.commands import check_id
from orders.events import stream_id
from orders.order import OrderStatus
from orders.projections import (
    CUSTOMER_SUMMARY_NAME,
    CUSTOMERS,
    ORDER_VIEW_NAME,
    ORDERS,
    PRODUCT_SALES_NAME,
    PRODUCTS,
    CustomerDocument,
    OrderDocument,
    empty_customer,
    empty_product,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_TOP_PRODUCTS = 10
MAX_TOP_PRODUCTS = 100
_MAX_CURSOR = 2**63 - 1
U64_MAX = 2**64 - 1  # what an answer's uint64 sum can hold


def saturate(value: int) -> tuple[int, bool]:
    """A stored sum as an answer can carry it: at most U64_MAX, and whether it was cut there.

    The read models keep sums exact (their documents hold any integer), so a sum that passes
    U64_MAX and falls back, as when an order is cancelled, answers right again.
    """
    return (U64_MAX, True) if value > U64_MAX else (value, False)


@dataclass(frozen=True, slots=True)
class GetOrder:
    order_id: str


@dataclass(frozen=True, slots=True)
class ListOrdersByCustomer:
    customer_id: str
    page_size: int = 0  # 0 means DEFAULT_PAGE_SIZE; more than MAX_PAGE_SIZE means MAX_PAGE_SIZE
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class CustomerOrdersChanged:
    """The customer's orders created or changed by events after `after_position` (for watches)."""

    customer_id: str
    after_position: int


@dataclass(frozen=True, slots=True)
class ListOrdersByStatus:
    status: OrderStatus | None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class GetCustomerSummary:
    customer_id: str


@dataclass(frozen=True, slots=True)
class GetProductSales:
    product_id: str


@dataclass(frozen=True, slots=True)
class ListTopProducts:
    limit: int = 0  # 0 means DEFAULT_TOP_PRODUCTS; more than MAX_TOP_PRODUCTS means MAX_TOP_PRODUCTS


class ProductSales(TypedDict):
    product_id: str
    units_sold: int
    revenue: int
    order_count: int
    saturated: bool  # units_sold or revenue passed U64_MAX and answers U64_MAX


class CustomerAnswer(CustomerDocument):
    total_value_saturated: bool  # total_value passed U64_MAX and answers U64_MAX


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[OrderDocument]
    next_page_token: str  # empty on the last page


# -- page tokens: opaque to clients, bound to the list they came from ----------------------------


def encode_page_token(list_name: str, key: str, cursor: Cursor) -> str:
    raw = json.dumps([list_name, key, cursor[0], cursor[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, list_name: str, key: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        name, token_key, order_value, last_key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as error:
        raise _bad_token("is not a page token from this service") from error
    if (name, token_key) != (list_name, key):
        raise _bad_token("belongs to a different list")
    # bool is an int to isinstance; SQLite integers end at 2^63-1 (a larger one would raise there).
    if type(order_value) is not int or not 0 <= order_value <= _MAX_CURSOR or not isinstance(last_key, str):
        raise _bad_token("is not a page token from this service")
    return order_value, last_key


def _bad_token(description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", description)])


def page_size(requested: int) -> int:
    return DEFAULT_PAGE_SIZE if requested <= 0 else min(requested, MAX_PAGE_SIZE)


# -- validation ---------------------------------------------------------------------------------


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def validate_get_order(query: GetOrder) -> None:
    violations: list[FieldViolation] = []
    check_id("order_id", query.order_id, violations)
    _raise(violations)


def validate_by_customer(query: ListOrdersByCustomer) -> None:
    violations: list[FieldViolation] = []
    check_id("customer_id", query.customer_id, violations)
    _raise(violations)
    if query.page_token:
        decode_page_token(query.page_token, "by_customer", query.customer_id)


def validate_changed(query: CustomerOrdersChanged) -> None:
    violations: list[FieldViolation] = []
    check_id("customer_id", query.customer_id, violations)
    _raise(violations)


def validate_by_status(query: ListOrdersByStatus) -> None:
    if query.status is None:
        raise InvalidArgument([FieldViolation("status", "must name a status, not UNSPECIFIED")])
    if query.page_token:
        decode_page_token(query.page_token, "by_status", query.status.value)


def validate_customer_summary(query: GetCustomerSummary) -> None:
    violations: list[FieldViolation] = []
    check_id("customer_id", query.customer_id, violations)
    _raise(violations)


# -- handlers -----------------------------------------------------------------------------------


def get_order(view: ReadView, query: GetOrder) -> OrderDocument:
    document = view.get(ORDERS, query.order_id)
    if document is None:
        raise NotFound(f"order {query.order_id!r} not found")
    return document  # type: ignore[return-value]


def _list(view: ReadView, index: str, key: str, size: int, token: str) -> OrderPage:
    after = decode_page_token(token, index, key) if token else None
    page = view.page(ORDERS, index, (key,), after, page_size(size))
    next_token = encode_page_token(index, key, page.next_cursor) if page.next_cursor else ""
    documents: Any = page.documents
    return OrderPage(documents, next_token)


def list_by_customer(view: ReadView, query: ListOrdersByCustomer) -> OrderPage:
    return _list(view, "by_customer", query.customer_id, query.page_size, query.page_token)


def customer_orders_changed(view: ReadView, query: CustomerOrdersChanged) -> list[OrderDocument]:
    """In the order of their changes, oldest first; every one, however many."""
    changed: list[Any] = []
    cursor: Cursor | None = None
    while True:
        page = view.page(ORDERS, "by_customer_changes", (query.customer_id,), cursor, MAX_PAGE_SIZE)
        fresh = [d for d in page.documents if d["changed_position"] > query.after_position]
        changed += fresh
        if page.next_cursor is None or len(fresh) < len(page.documents):
            return changed[::-1]
        cursor = page.next_cursor


def list_by_status(view: ReadView, query: ListOrdersByStatus) -> OrderPage:
    assert query.status is not None  # validated
    return _list(view, "by_status", query.status.value, query.page_size, query.page_token)


def customer_summary(view: ReadView, query: GetCustomerSummary) -> CustomerAnswer:
    """A customer without orders has an all-zero summary: customers exist only through orders."""
    document: Any = view.get(CUSTOMERS, query.customer_id) or empty_customer(query.customer_id)
    answer: Any = dict(document)
    answer["total_value"], answer["total_value_saturated"] = saturate(document["total_value"])
    return answer  # type: ignore[no-any-return]


def validate_product_sales(query: GetProductSales) -> None:
    violations: list[FieldViolation] = []
    check_id("product_id", query.product_id, violations)
    _raise(violations)


def _sales(document: Any) -> ProductSales:
    units, units_cut = saturate(document["units_sold"])
    revenue, revenue_cut = saturate(document["revenue"])
    return {
        "product_id": document["product_id"],
        "units_sold": units,
        "revenue": revenue,
        "order_count": document["order_count"],
        "saturated": units_cut or revenue_cut,
    }


def product_sales(view: ReadView, query: GetProductSales) -> ProductSales:
    """A product without sales answers all zeros."""
    return _sales(view.get(PRODUCTS, query.product_id) or empty_product(query.product_id))


def top_products(view: ReadView, query: ListTopProducts) -> list[ProductSales]:
    """By revenue, highest first, ties by product_id (ascending).

    The index orders ties by key descending, so the page is extended while the revenue rank at its
    end repeats, then sorted by (revenue, product_id) as answered.
    """
    limit = DEFAULT_TOP_PRODUCTS if query.limit <= 0 else min(query.limit, MAX_TOP_PRODUCTS)
    page = view.page(PRODUCTS, "by_revenue", (), None, limit)
    documents = list(page.documents)
    last_rank = documents[-1]["revenue_rank"] if documents else None
    cursor = page.next_cursor
    while cursor is not None and cursor[0] == last_rank:
        page = view.page(PRODUCTS, "by_revenue", (), cursor, limit)
        tied = [d for d in page.documents if d["revenue_rank"] == last_rank]
        documents += tied
        cursor = page.next_cursor if len(tied) == len(page.documents) else None
    answers = [_sales(d) for d in documents]
    answers.sort(key=lambda s: (-s["revenue"], s["product_id"]))
    return answers[:limit]


def query_bus() -> QueryBus:
    bus = QueryBus()
    views = (ORDER_VIEW_NAME,)
    bus.register(
        GetOrder, QueryHandler(views, get_order, validate_get_order, lambda q: (stream_id(q.order_id),))
    )
    bus.register(ListOrdersByCustomer, QueryHandler(views, list_by_customer, validate_by_customer))
    bus.register(ListOrdersByStatus, QueryHandler(views, list_by_status, validate_by_status))
    bus.register(CustomerOrdersChanged, QueryHandler(views, customer_orders_changed, validate_changed))
    bus.register(
        GetCustomerSummary,
        QueryHandler((CUSTOMER_SUMMARY_NAME,), customer_summary, validate_customer_summary),
    )
    sales = (PRODUCT_SALES_NAME,)
    bus.register(GetProductSales, QueryHandler(sales, product_sales, validate_product_sales))
    bus.register(ListTopProducts, QueryHandler(sales, top_products))
    return bus
