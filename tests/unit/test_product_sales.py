"""The product sales read model and its two queries, over the in-memory stores."""

from __future__ import annotations

from eventcore.events import PendingAppend
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from orders import queries
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderItem, stream_id


def order(store: InMemoryEventStore, order_id: str, *items: tuple[str, int, int]) -> None:
    lines = tuple(OrderItem(p, q, u) for p, q, u in items)
    total = sum(q * u for _, q, u in items)
    store.append(PendingAppend(stream_id(order_id), 0, [OrderCreated(order_id, "c", lines, total)]))


def ask(read_store: InMemoryReadStoreWriter, query: object) -> object:
    return queries.query_bus().ask(read_store.reader(), query).value


def test_sales_count_non_cancelled_orders(
    store: InMemoryEventStore, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    order(store, "o-1", ("a", 2, 100), ("b", 1, 50), ("a", 1, 100))  # a twice in one order: one order
    order(store, "o-2", ("a", 1, 100))
    order(store, "o-3", ("b", 4, 50))
    store.append(PendingAppend(stream_id("o-2"), 1, [OrderConfirmed("o-2")]))
    store.append(PendingAppend(stream_id("o-3"), 1, [OrderCancelled("o-3", "")]))
    runner.run_until_idle()
    assert ask(read_store, queries.GetProductSales("a")) == {
        "product_id": "a",
        "units_sold": 4,
        "revenue": 400,
        "order_count": 2,
        "saturated": False,
    }
    assert ask(read_store, queries.GetProductSales("b")) == {
        "product_id": "b",
        "units_sold": 1,
        "revenue": 50,
        "order_count": 1,
        "saturated": False,
    }
    assert ask(read_store, queries.GetProductSales("never")) == {
        "product_id": "never",
        "units_sold": 0,
        "revenue": 0,
        "order_count": 0,
        "saturated": False,
    }


def test_top_products_by_revenue_then_product_id(
    store: InMemoryEventStore, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    for n, product in enumerate(["p-d", "p-b", "p-c", "p-a"]):  # equal revenues, keys in no order
        order(store, f"tie-{n}", (product, 1, 70))
    order(store, "big", ("p-z", 1, 1000))
    order(store, "small", ("p-y", 1, 10))
    order(store, "gone", ("p-x", 1, 5000))
    store.append(PendingAppend(stream_id("gone"), 1, [OrderCancelled("gone", "")]))
    runner.run_until_idle()

    def top(limit: int) -> list[tuple[str, int]]:
        answer: list[queries.ProductSales] = ask(read_store, queries.ListTopProducts(limit))  # type: ignore[assignment]
        return [(s["product_id"], s["revenue"]) for s in answer]

    everything = [("p-z", 1000), ("p-a", 70), ("p-b", 70), ("p-c", 70), ("p-d", 70), ("p-y", 10)]
    assert top(0) == everything  # 0 means 10; the cancelled product has no sales left
    assert top(2) == everything[:2]  # the tie at the end of the page is settled by product_id
    assert top(3) == everything[:3]
    assert top(1000) == everything


def test_sums_past_u64_saturate(
    store: InMemoryEventStore, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    for n in range(3):
        order(store, f"o-{n}", ("gold", 1, 2**63 - 1))
    order(store, "o-x", ("tin", 1, 1))
    runner.run_until_idle()
    gold: queries.ProductSales = ask(read_store, queries.GetProductSales("gold"))  # type: ignore[assignment]
    assert (gold["revenue"], gold["saturated"], gold["order_count"]) == (2**64 - 1, True, 3)
    top: list[queries.ProductSales] = ask(read_store, queries.ListTopProducts(5))  # type: ignore[assignment]
    assert [s["product_id"] for s in top] == ["gold", "tin"]
