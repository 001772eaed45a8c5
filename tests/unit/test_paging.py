"""Paging of the order lists: newest first, opaque tokens, stable while new orders arrive."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore.command_bus import CommandBus
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from orders import queries
from orders.order import OrderStatus
from orders.projections import ORDERS

from .support import confirm, create


def list_all(read_store: InMemoryReadStoreWriter, query: Any) -> tuple[list[list[str]], list[str]]:
    """Follow the tokens to the end; returns the order ids per page and the tokens seen."""
    bus = queries.query_bus()
    pages: list[list[str]] = []
    tokens: list[str] = []
    while True:
        bus.validate(query)
        page: queries.OrderPage = bus.ask(read_store.reader(), query).value
        pages.append([doc["order_id"] for doc in page.orders])
        tokens.append(page.next_page_token)
        if not page.next_page_token:
            return pages, tokens
        query = type(query)(*_key(query), query.page_size, page.next_page_token)


def _key(query: Any) -> tuple[Any]:
    return (query.customer_id,) if isinstance(query, queries.ListOrdersByCustomer) else (query.status,)


async def test_pages_run_newest_first_and_end_with_an_empty_token(
    bus: CommandBus, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    for i in range(23):
        await bus.dispatch(create(f"a-{i:02}", "cust-1"))
        await bus.dispatch(create(f"b-{i:02}", "cust-2"))
    runner.run_until_idle()
    pages, tokens = list_all(read_store, queries.ListOrdersByCustomer("cust-1", 5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [o for p in pages for o in p] == [f"a-{i:02}" for i in reversed(range(23))]
    assert all(tokens[:-1]) and tokens[-1] == ""


async def test_a_last_page_that_is_exactly_full_has_no_token(
    bus: CommandBus, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    for i in range(10):
        await bus.dispatch(create(f"a-{i}", "cust-1"))
    runner.run_until_idle()
    pages, tokens = list_all(read_store, queries.ListOrdersByCustomer("cust-1", 5))
    assert [len(p) for p in pages] == [5, 5]
    assert tokens[-1] == ""
    pages, tokens = list_all(read_store, queries.ListOrdersByCustomer("cust-1", 10))
    assert [len(p) for p in pages] == [10] and tokens == [""]


async def test_a_customer_without_orders_gets_one_empty_page(
    read_store: InMemoryReadStoreWriter, runner: ProjectionRunner
) -> None:
    runner.run_until_idle()
    assert list_all(read_store, queries.ListOrdersByCustomer("nobody", 5)) == ([[]], [""])


async def test_tokens_stay_valid_while_new_orders_arrive(
    bus: CommandBus, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    for i in range(23):
        await bus.dispatch(create(f"a-{i:02}", "cust-1"))
    runner.run_until_idle()
    original = [f"a-{i:02}" for i in reversed(range(23))]
    arrived: list[str] = []
    bus_q = queries.query_bus()
    query = queries.ListOrdersByCustomer("cust-1", 4)
    seen: list[str] = []
    while True:
        page = bus_q.ask(read_store.reader(), query).value
        seen += [doc["order_id"] for doc in page.orders]
        if not page.next_page_token:
            break
        for j in range(3):  # new orders (newest of all) arrive between every two pages
            order_id = f"new-{len(seen)}-{j}"
            arrived.append(order_id)
            await bus.dispatch(create(order_id, "cust-1"))
        runner.run_until_idle()
        query = queries.ListOrdersByCustomer("cust-1", 4, page.next_page_token)
    assert seen == original  # nothing skipped, nothing repeated, no newcomer mixed in
    assert len(arrived) == 15
    fresh, _ = list_all(read_store, queries.ListOrdersByCustomer("cust-1", 500))
    assert fresh[0] == list(reversed(arrived)) + original


async def test_status_pages_skip_nothing_while_orders_change_status(
    bus: CommandBus, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    for i in range(20):
        await bus.dispatch(create(f"o-{i:02}", f"cust-{i % 3}"))
    runner.run_until_idle()
    bus_q = queries.query_bus()
    query = queries.ListOrdersByStatus(OrderStatus.PENDING, 3)
    seen: list[str] = []
    confirmed: list[str] = []
    while True:
        page = bus_q.ask(read_store.reader(), query).value
        seen += [doc["order_id"] for doc in page.orders]
        if not page.next_page_token:
            break
        # between pages: an order already listed and one not yet listed leave PENDING, one arrives
        left_behind = seen[0] if seen[0] not in confirmed else None
        ahead = f"o-{int(seen[-1][2:]) - 1:02}" if int(seen[-1][2:]) > 0 else None
        for order_id in (left_behind, ahead):
            if order_id is not None and order_id not in confirmed:
                await bus.dispatch(confirm(order_id))
                confirmed.append(order_id)
        await bus.dispatch(create(f"late-{len(seen)}", "cust-9"))
        runner.run_until_idle()
        query = queries.ListOrdersByStatus(OrderStatus.PENDING, 3, page.next_page_token)
    assert len(seen) == len(set(seen))  # nothing repeated
    assert not any(o.startswith("late-") for o in seen)
    still_pending = [f"o-{i:02}" for i in reversed(range(20)) if f"o-{i:02}" not in confirmed]
    assert [o for o in seen if o in still_pending] == still_pending  # none that stayed PENDING skipped


@pytest.mark.parametrize(
    ("requested", "served"), [(0, 50), (1, 1), (499, 499), (500, 500), (501, 500), (10**6, 500)]
)
def test_page_size_defaults_to_50_and_stops_at_500(
    read_store: InMemoryReadStoreWriter, requested: int, served: int
) -> None:
    read_store.reset("order_view", 1, [ORDERS])
    with read_store.transaction() as work:
        for i in range(1, 601):
            work.put(ORDERS, f"o-{i}", {"order_id": f"o-{i}", "customer_id": "bulk", "created_position": i})
    query = queries.ListOrdersByCustomer("bulk", requested)
    page = queries.query_bus().ask(read_store.reader(), query).value
    assert len(page.orders) == served
    assert page.orders[0]["order_id"] == "o-600"
    assert page.next_page_token != ""


async def test_a_customers_changes_are_found_however_old_the_order(
    bus: CommandBus, runner: ProjectionRunner, read_store: InMemoryReadStoreWriter
) -> None:
    """What WatchCustomerOrders asks after its first page: older orders than the newest 500 count too."""
    for i in range(600):
        await bus.dispatch(create(f"a-{i:03}", "cust-1"))
    await bus.dispatch(create("b-1", "cust-2"))
    runner.run_until_idle()
    since = read_store.checkpoints()["order_view"].position
    await bus.dispatch(confirm("a-000"))
    await bus.dispatch(create("a-600", "cust-1"))
    await bus.dispatch(confirm("b-1"))
    await bus.dispatch(confirm("a-300"))
    runner.run_until_idle()
    changed = (
        queries.query_bus().ask(read_store.reader(), queries.CustomerOrdersChanged("cust-1", since)).value
    )
    assert [(d["order_id"], d["status"]) for d in changed] == [
        ("a-000", OrderStatus.CONFIRMED.value),
        ("a-600", OrderStatus.PENDING.value),
        ("a-300", OrderStatus.CONFIRMED.value),
    ]
    everything = (
        queries.query_bus().ask(read_store.reader(), queries.CustomerOrdersChanged("cust-1", 0)).value
    )
    assert len(everything) == 601
