"""Concurrency and crashes: gap-free positions under 300 concurrent creates, clean conflicts on one order,
and a projector killed with SIGKILL in the middle of 1,000+ events that recovers exact totals."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from e2e_support import Trio, create_request, event_rows, item, total_of, unique, wait_for

from orders_api.v1 import orders_pb2

pytestmark = pytest.mark.e2e

S = orders_pb2.OrderStatus


def run_bounded(
    fn: Any, requests: Iterable[Any], in_flight: int = 64, before_submit: Callable[[int], None] | None = None
) -> list[Any]:
    """Send the requests with at most `in_flight` outstanding; return replies in request order.

    before_submit(n) runs before request n is sent (while earlier ones may still be in flight).
    """
    futures: list[Future[Any]] = []
    for n, request in enumerate(requests):
        if before_submit is not None:
            before_submit(n)
        if n >= in_flight:
            futures[n - in_flight].result(timeout=30)
        futures.append(fn.future(request, timeout=30))
    return [f.result(timeout=30) for f in futures]


# ------------------------------------------------------------------------------------------------
# 300 concurrent creates
# ------------------------------------------------------------------------------------------------


def test_300_concurrent_creates_get_positions_1_to_300_without_gaps(make_trio: Callable[..., Trio]) -> None:
    trio = make_trio()
    trio.start_write()
    ids = [unique("o") for _ in range(300)]
    futures = [
        trio.commands.CreateOrder.future(create_request(i, f"c-{n % 7}", [item("p", 1, n + 1)]), timeout=30)
        for n, i in enumerate(ids)
    ]
    replies = [f.result(timeout=30) for f in futures]

    assert sorted(r.position for r in replies) == list(range(1, 301))
    for order_id, reply in zip(ids, replies, strict=True):
        assert reply.stream_version == 1 and not reply.deduplicated
        assert [(e.position, e.stream_id, e.stream_version) for e in reply.events] == [
            (reply.position, f"order-{order_id}", 1)
        ]

    rows = event_rows(trio.events_db)
    assert [r[0] for r in rows] == list(range(1, 301)), "the events table is not gap-free 1..300"
    assert {(r[0], r[1]) for r in rows} == {
        (r.position, f"order-{i}") for i, r in zip(ids, replies, strict=True)
    }
    assert {(r[2], r[3]) for r in rows} == {(1, "OrderCreated")}


# ------------------------------------------------------------------------------------------------
# Conflicts on one order
# ------------------------------------------------------------------------------------------------


def _settle(futures: list[Future[Any]]) -> tuple[list[Any], list[grpc.RpcError]]:
    ok: list[Any] = []
    errors: list[grpc.RpcError] = []
    for future in futures:
        try:
            ok.append(future.result(timeout=30))
        except grpc.RpcError as error:
            errors.append(error)
    return ok, errors


def test_concurrent_commands_on_one_order_conflict_cleanly(trio: Trio) -> None:
    order_id = unique("o")
    creates = [trio.commands.CreateOrder.future(create_request(order_id, "c"), timeout=30) for _ in range(30)]
    ok, errors = _settle(creates)
    assert len(ok) == 1, f"{len(ok)} of 30 concurrent creates of one order succeeded"
    assert {e.code() for e in errors} == {grpc.StatusCode.ALREADY_EXISTS}, {
        (e.code(), e.details()) for e in errors
    }

    confirms = [
        trio.commands.ConfirmOrder.future(
            orders_pb2.ConfirmOrderRequest(order_id=order_id, expected_version=1), timeout=30
        )
        for _ in range(30)
    ]
    ok, errors = _settle(confirms)
    assert len(ok) == 1, f"{len(ok)} of 30 concurrent confirms at expected_version 1 succeeded"
    assert ok[0].stream_version == 2
    codes = {e.code() for e in errors}
    assert codes <= {grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION}, {
        (e.code(), e.details()) for e in errors
    }

    rows = [r for r in event_rows(trio.events_db, ok[0].position - 40) if r[1] == f"order-{order_id}"]
    assert [(r[2], r[3]) for r in rows] == [(1, "OrderCreated"), (2, "OrderConfirmed")]


def test_concurrent_retries_of_one_command_append_once(trio: Trio) -> None:
    request = create_request(unique("o"), "c", [item("p", 2, 21)], command_id=unique("cmd"))
    head = trio.head()
    ok, errors = _settle([trio.commands.CreateOrder.future(request, timeout=30) for _ in range(30)])
    assert not errors, {(e.code(), e.details()) for e in errors}
    assert {r.position for r in ok} == {head + 1}
    assert sum(not r.deduplicated for r in ok) == 1, "exactly one of the retries is the original"
    assert trio.head() == head + 1


# ------------------------------------------------------------------------------------------------
# kill -9 of the projector in the middle of the stream
# ------------------------------------------------------------------------------------------------


@dataclass
class PlannedOrder:
    order_id: str
    customer_id: str
    items: list[orders_pb2.OrderItem]
    fate: str  # pending | cancel_pending | confirm | ship | confirm_cancel

    @property
    def total(self) -> int:
        return total_of(self.items)

    @property
    def status(self) -> int:
        return {
            "pending": S.ORDER_STATUS_PENDING,
            "cancel_pending": S.ORDER_STATUS_CANCELLED,
            "confirm": S.ORDER_STATUS_CONFIRMED,
            "ship": S.ORDER_STATUS_SHIPPED,
            "confirm_cancel": S.ORDER_STATUS_CANCELLED,
        }[self.fate]

    @property
    def version(self) -> int:
        return {"pending": 1, "cancel_pending": 2, "confirm": 2, "ship": 3, "confirm_cancel": 3}[self.fate]


FATES = [
    "pending",
    "cancel_pending",
    "confirm",
    "confirm",
    "confirm",
    "ship",
    "ship",
    "ship",
    "confirm_cancel",
    "confirm_cancel",
]


def _plan(count: int, customers: list[str]) -> list[PlannedOrder]:
    rng = random.Random(20240611)
    plan = []
    for n in range(count):
        items = [
            item(f"sku-{rng.randrange(50)}", rng.randint(1, 5), rng.randint(1, 100_000))
            for _ in range(rng.randint(1, 4))
        ]
        plan.append(PlannedOrder(unique("o"), customers[n % len(customers)], items, FATES[n % len(FATES)]))
    return plan


def _list_all(fetch: Callable[[str], orders_pb2.ListOrdersResponse]) -> list[orders_pb2.OrderSummary]:
    orders: list[orders_pb2.OrderSummary] = []
    token = ""
    for _ in range(100):
        reply = fetch(token)
        orders.extend(reply.orders)
        token = reply.next_page_token
        if not token:
            return orders
    raise AssertionError("paging did not end after 100 pages")


def test_projector_killed_mid_stream_recovers_exact_read_model(make_trio: Callable[..., Trio]) -> None:
    trio = make_trio()
    trio.start_all()
    cmd, q = trio.commands, trio.queries
    customers = [unique("c") for _ in range(23)]
    plan = _plan(600, customers)
    expected_events = sum(o.version for o in plan)
    assert expected_events >= 1000

    # Phase 1: every order is created.
    run_bounded(cmd.CreateOrder, (create_request(o.order_id, o.customer_id, o.items) for o in plan))

    # Phase 2: confirm or cancel pending orders; the projector is killed -9 part-way through.
    killed_at: list[int] = []

    def kill_projector(n: int) -> None:
        if n == 200:
            trio.projector.kill9()
            killed_at.append(trio.head())

    phase2 = [
        orders_pb2.CancelOrderRequest(order_id=o.order_id, reason=f"r-{n}")
        if o.fate == "cancel_pending"
        else orders_pb2.ConfirmOrderRequest(order_id=o.order_id, expected_version=1)
        for n, o in enumerate(plan)
        if o.fate != "pending"
    ]

    confirms = [r for r in phase2 if isinstance(r, orders_pb2.ConfirmOrderRequest)]
    cancels = [r for r in phase2 if isinstance(r, orders_pb2.CancelOrderRequest)]
    run_bounded(cmd.ConfirmOrder, confirms, before_submit=kill_projector)
    assert killed_at and not trio.projector.alive()
    run_bounded(cmd.CancelOrder, cancels)

    # While the projector is down the read side keeps answering, from a read model that is behind.
    status = q.GetProjectionStatus(orders_pb2.GetProjectionStatusRequest(), timeout=10)
    assert status.event_store_version == trio.head()
    assert all(p.position < status.event_store_version for p in status.projections), status

    # Phase 3: ship or cancel the confirmed orders; the projector comes back half-way, is killed
    # again right after starting, and is started once more.
    phase3 = [o for o in plan if o.fate in ("ship", "confirm_cancel")]
    half = len(phase3) // 2

    def phase3_requests(orders: list[PlannedOrder]) -> tuple[list[Any], list[Any]]:
        ships = [
            orders_pb2.ShipOrderRequest(
                order_id=o.order_id, tracking_number=f"T-{o.order_id}", expected_version=2
            )
            for o in orders
            if o.fate == "ship"
        ]
        cancels = [orders_pb2.CancelOrderRequest(order_id=o.order_id) for o in orders if o.fate != "ship"]
        return ships, cancels

    ships, cancels = phase3_requests(phase3[:half])
    run_bounded(cmd.ShipOrder, ships)
    run_bounded(cmd.CancelOrder, cancels)
    trio.start_projector()
    time.sleep(0.5)
    trio.projector.kill9()
    trio.start_projector()
    ships, cancels = phase3_requests(phase3[half:])
    run_bounded(cmd.ShipOrder, ships)
    run_bounded(cmd.CancelOrder, cancels)

    head = trio.head()
    assert head == expected_events, f"event store head {head}, expected {expected_events} events"
    assert killed_at[0] < head
    status = trio.wait_projected(head, timeout=30)
    assert status.event_store_version == head
    assert {p.name: p.position for p in status.projections} == {p.name: head for p in status.projections}

    # The read model equals what the commands imply, computed independently here.
    by_customer: dict[str, list[PlannedOrder]] = defaultdict(list)
    for o in plan:
        by_customer[o.customer_id].append(o)
    for customer, orders in by_customer.items():
        reply = q.GetCustomerSummary(
            orders_pb2.GetCustomerSummaryRequest(customer_id=customer, min_position=head), timeout=10
        )
        s = reply.summary
        counts = Counter(o.status for o in orders)
        assert (s.order_count, s.pending_count, s.confirmed_count, s.shipped_count, s.cancelled_count) == (
            len(orders),
            counts[S.ORDER_STATUS_PENDING],
            counts[S.ORDER_STATUS_CONFIRMED],
            counts[S.ORDER_STATUS_SHIPPED],
            counts[S.ORDER_STATUS_CANCELLED],
        ), f"summary of {customer}: {s}"
        assert s.total_value == sum(o.total for o in orders if o.status != S.ORDER_STATUS_CANCELLED), customer
        assert reply.consistency.is_consistent

        listed = _list_all(
            lambda token, c=customer: q.ListOrdersByCustomer(
                orders_pb2.ListOrdersByCustomerRequest(customer_id=c, page_size=7, page_token=token),
                timeout=10,
            )
        )
        assert sorted(o.order_id for o in listed) == sorted(o.order_id for o in orders)

    for status_value in (
        S.ORDER_STATUS_PENDING,
        S.ORDER_STATUS_CONFIRMED,
        S.ORDER_STATUS_SHIPPED,
        S.ORDER_STATUS_CANCELLED,
    ):
        listed = _list_all(
            lambda token, st=status_value: q.ListOrdersByStatus(
                orders_pb2.ListOrdersByStatusRequest(status=st, page_size=500, page_token=token), timeout=10
            )
        )
        assert sorted(o.order_id for o in listed) == sorted(
            o.order_id for o in plan if o.status == status_value
        )
        assert {o.order_id: o.total for o in listed} == {
            o.order_id: o.total for o in plan if o.status == status_value
        }

    views = [q.GetOrder.future(orders_pb2.GetOrderRequest(order_id=o.order_id), timeout=30) for o in plan]
    for o, future in zip(plan, views, strict=True):
        view = future.result(timeout=30).order
        assert (view.status, view.version, view.total, view.customer_id) == (
            o.status,
            o.version,
            o.total,
            o.customer_id,
        ), o.order_id
        assert list(view.items) == o.items
        if o.fate == "ship":
            assert view.tracking_number == f"T-{o.order_id}"


# ------------------------------------------------------------------------------------------------
# kill -9 of the write service in the middle of the stream
# ------------------------------------------------------------------------------------------------


def test_write_service_killed_mid_stream_keeps_every_acknowledged_command(
    make_trio: Callable[..., Trio],
) -> None:
    """A reply is sent only after its events are committed: after kill -9 and a restart, every
    acknowledged command is there (and still deduplicated by its command_id), positions stay gap-free."""
    trio = make_trio()
    trio.start_write()
    requests = [create_request(unique("o"), "c-kill", command_id=unique("cmd")) for _ in range(400)]
    futures = [trio.commands.CreateOrder.future(r, timeout=30) for r in requests]
    wait_for(lambda: sum(f.done() for f in futures) >= 50, 20, "50 acknowledged creates")
    trio.write.kill9()

    acknowledged: dict[str, int] = {}
    for request, future in zip(requests, futures, strict=True):
        try:
            acknowledged[f"order-{request.order_id}"] = future.result(timeout=30).position
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), error
    assert 50 <= len(acknowledged) < 400, f"{len(acknowledged)} acknowledged: the kill was not mid-stream"

    trio.start_write()
    rows = event_rows(trio.events_db)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), "positions are not gap-free"
    stored = {r[1]: r[0] for r in rows}
    missing = {s: p for s, p in acknowledged.items() if stored.get(s) != p}
    assert not missing, (
        f"acknowledged but not in the event store at that position: {list(missing.items())[:5]}"
    )

    first = next(r for r in requests if f"order-{r.order_id}" in acknowledged)
    again = trio.commands.CreateOrder(first, timeout=10)
    assert (again.deduplicated, again.position) == (True, acknowledged[f"order-{first.order_id}"])
    after = trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    assert after.position == len(rows) + 1
