"""The read side over gRPC against the shared trio: read-your-writes, consistency metadata, lists and pages,
customer summaries, validation, health and reflection."""

from __future__ import annotations

import re
import time
from concurrent.futures import Future
from typing import Any

import grpc
import pytest
from e2e_support import (
    Trio,
    bad_request_fields,
    create_request,
    health,
    item,
    rpc_error,
    trailing,
    unique,
)
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orders_api.v1 import orders_pb2

pytestmark = pytest.mark.e2e

S = orders_pb2.OrderStatus
PENDING, CONFIRMED, SHIPPED, CANCELLED = (
    S.ORDER_STATUS_PENDING,
    S.ORDER_STATUS_CONFIRMED,
    S.ORDER_STATUS_SHIPPED,
    S.ORDER_STATUS_CANCELLED,
)


def versions(call: Any) -> tuple[int, int]:
    """(x-read-model-version, x-event-store-version) from a call's or an error's trailing metadata."""
    metadata = trailing(call)
    assert "x-read-model-version" in metadata and "x-event-store-version" in metadata, (
        f"trailing metadata lacks the consistency versions: {metadata}"
    )
    return int(metadata["x-read-model-version"]), int(metadata["x-event-store-version"])


def assert_consistency(consistency: orders_pb2.Consistency, call: Any, min_position: int) -> None:
    assert consistency.read_model_version >= min_position, (
        f"read_model_version {consistency.read_model_version} < min_position {min_position}"
    )
    assert consistency.event_store_version >= min_position
    assert consistency.event_store_version >= consistency.read_model_version
    assert consistency.is_consistent == (consistency.read_model_version >= consistency.event_store_version)
    assert versions(call) == (consistency.read_model_version, consistency.event_store_version)


def ms(ts: Timestamp) -> float:
    return ts.seconds * 1000 + ts.nanos / 1e6


def is_set(ts: Timestamp) -> bool:
    return ts.seconds != 0 or ts.nanos != 0


# ------------------------------------------------------------------------------------------------
# Read-your-writes
# ------------------------------------------------------------------------------------------------


def test_get_order_with_min_position_reads_your_writes_through_the_lifecycle(trio: Trio) -> None:
    order_id, customer_id = unique("o"), unique("c")
    items = [item("sku-a", 3, 1999), item("sku-b", 1, 5)]
    q = trio.queries

    created = trio.commands.CreateOrder(create_request(order_id, customer_id, items), timeout=10)
    reply, call = q.GetOrder.with_call(
        orders_pb2.GetOrderRequest(order_id=order_id, min_position=created.position), timeout=10
    )
    view = reply.order
    assert (view.order_id, view.customer_id, view.status, view.total, view.version) == (
        order_id,
        customer_id,
        PENDING,
        3 * 1999 + 5,
        1,
    )
    assert list(view.items) == items
    assert is_set(view.created_at) and not is_set(view.confirmed_at) and not is_set(view.shipped_at)
    assert abs(ms(view.created_at) - ms(created.events[0].recorded_at)) <= 1.0
    assert_consistency(reply.consistency, call, created.position)

    confirmed = trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=order_id), timeout=10)
    reply, call = q.GetOrder.with_call(
        orders_pb2.GetOrderRequest(order_id=order_id, min_position=confirmed.position), timeout=10
    )
    assert (reply.order.status, reply.order.version) == (CONFIRMED, 2)
    assert is_set(reply.order.confirmed_at)
    assert_consistency(reply.consistency, call, confirmed.position)

    shipped = trio.commands.ShipOrder(
        orders_pb2.ShipOrderRequest(order_id=order_id, tracking_number="1Z-42"), timeout=10
    )
    reply, call = q.GetOrder.with_call(
        orders_pb2.GetOrderRequest(order_id=order_id, min_position=shipped.position), timeout=10
    )
    assert (reply.order.status, reply.order.version, reply.order.tracking_number) == (SHIPPED, 3, "1Z-42")
    assert is_set(reply.order.shipped_at) and not is_set(reply.order.cancelled_at)
    assert_consistency(reply.consistency, call, shipped.position)

    other = unique("o")
    trio.commands.CreateOrder(create_request(other, customer_id), timeout=10)
    cancelled = trio.commands.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=other, reason="too slow"), timeout=10
    )
    reply, call = q.GetOrder.with_call(
        orders_pb2.GetOrderRequest(order_id=other, min_position=cancelled.position), timeout=10
    )
    assert (reply.order.status, reply.order.version, reply.order.cancel_reason) == (CANCELLED, 2, "too slow")
    assert is_set(reply.order.cancelled_at)
    assert_consistency(reply.consistency, call, cancelled.position)


def test_read_your_writes_holds_on_every_try(trio: Trio) -> None:
    """Right after each command, no retry, no sleep: every query with min_position sees it."""
    customer_id = unique("c")
    for n in range(25):
        order_id = unique("o")
        created = trio.commands.CreateOrder(
            create_request(order_id, customer_id, [item("p", n + 1, 10)]), timeout=10
        )
        reply = trio.queries.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id, min_position=created.position), timeout=10
        )
        assert (reply.order.order_id, reply.order.total) == (order_id, (n + 1) * 10)
        summary = trio.queries.GetCustomerSummary(
            orders_pb2.GetCustomerSummaryRequest(customer_id=customer_id, min_position=created.position),
            timeout=10,
        )
        assert summary.summary.order_count == n + 1
        listed = trio.queries.ListOrdersByCustomer(
            orders_pb2.ListOrdersByCustomerRequest(customer_id=customer_id, min_position=created.position),
            timeout=10,
        )
        assert listed.orders[0].order_id == order_id
        assert len(listed.orders) == n + 1


def test_not_found_carries_the_consistency_versions(trio: Trio) -> None:
    head = trio.head()
    error = rpc_error(trio.queries.GetOrder, orders_pb2.GetOrderRequest(order_id=unique("nobody")))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    read_version, store_version = versions(error)
    assert store_version >= head

    created = trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    error = rpc_error(
        trio.queries.GetOrder,
        orders_pb2.GetOrderRequest(order_id=unique("nobody"), min_position=created.position),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    read_version, store_version = versions(error)
    assert read_version >= created.position and store_version >= created.position


def test_min_position_beyond_the_head_is_out_of_range_at_once(trio: Trio) -> None:
    created = trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    started = time.monotonic()
    error = rpc_error(
        trio.queries.GetOrder,
        orders_pb2.GetOrderRequest(order_id=unique("o"), min_position=created.position + 1000),
        timeout=8,
    )
    elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE, f"{error.code()}: {error.details()}"
    assert elapsed < 2.0, f"OUT_OF_RANGE took {elapsed:.2f}s, expected at once"
    versions(error)

    for request, rpc in [
        (orders_pb2.GetCustomerSummaryRequest(customer_id="c", min_position=2**62), "GetCustomerSummary"),
        (orders_pb2.ListOrdersByCustomerRequest(customer_id="c", min_position=2**62), "ListOrdersByCustomer"),
        (orders_pb2.ListOrdersByStatusRequest(status=PENDING, min_position=2**62), "ListOrdersByStatus"),
    ]:
        error = rpc_error(getattr(trio.queries, rpc), request, timeout=8)
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE, f"{rpc}: {error.code()}: {error.details()}"


def test_projection_status_reaches_the_event_store_head(trio: Trio) -> None:
    created = trio.commands.CreateOrder(create_request(unique("o")), timeout=10)
    status = trio.wait_projected(created.position, timeout=15)
    names = [p.name for p in status.projections]
    assert names and all(names) and len(set(names)) == len(names), names
    head = trio.head()
    assert status.event_store_version == head == created.position
    for projection in status.projections:
        assert projection.position == head, f"{projection.name} at {projection.position}, head {head}"
        assert is_set(projection.updated_at)


# ------------------------------------------------------------------------------------------------
# Customer summaries
# ------------------------------------------------------------------------------------------------


def test_customer_summary_counts_each_status_and_values_non_cancelled_orders(trio: Trio) -> None:
    c = unique("c")
    cmd = trio.commands
    ids = [unique("o") for _ in range(5)]
    totals = [100, 200, 300, 400, 7]
    for order_id, total in zip(ids, totals, strict=True):
        cmd.CreateOrder(create_request(order_id, c, [item("p", 1, total)]), timeout=10)
    cmd.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=ids[1]), timeout=10)
    cmd.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=ids[2]), timeout=10)
    cmd.ShipOrder(orders_pb2.ShipOrderRequest(order_id=ids[2], tracking_number="T"), timeout=10)
    cmd.CancelOrder(orders_pb2.CancelOrderRequest(order_id=ids[3]), timeout=10)
    cmd.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=ids[4]), timeout=10)
    last = cmd.CancelOrder(orders_pb2.CancelOrderRequest(order_id=ids[4], reason="x"), timeout=10)

    reply, call = trio.queries.GetCustomerSummary.with_call(
        orders_pb2.GetCustomerSummaryRequest(customer_id=c, min_position=last.position), timeout=10
    )
    s = reply.summary
    assert s.customer_id == c
    assert (s.order_count, s.pending_count, s.confirmed_count, s.shipped_count, s.cancelled_count) == (
        5,
        1,
        1,
        1,
        2,
    )
    assert s.total_value == 100 + 200 + 300
    assert_consistency(reply.consistency, call, last.position)
    views = [trio.queries.GetOrder(orders_pb2.GetOrderRequest(order_id=o), timeout=10).order for o in ids]
    assert ms(s.last_order_at) == max(ms(v.created_at) for v in views)


# ------------------------------------------------------------------------------------------------
# Lists and page tokens
# ------------------------------------------------------------------------------------------------


def _create_many(trio: Trio, customer_id: str, count: int, price: int = 10) -> tuple[list[str], int]:
    """Create `count` orders one after the other (so their order is known); return ids and last position."""
    ids, position = [], 0
    for _ in range(count):
        order_id = unique("o")
        position = trio.commands.CreateOrder(
            create_request(order_id, customer_id, [item("p", 1, price)]), timeout=10
        ).position
        ids.append(order_id)
    return ids, position


def test_list_by_customer_is_newest_first_and_tokens_survive_new_orders(trio: Trio) -> None:
    c = unique("c")
    ids, position = _create_many(trio, c, 7)
    q = trio.queries

    first, call = q.ListOrdersByCustomer.with_call(
        orders_pb2.ListOrdersByCustomerRequest(customer_id=c, page_size=3, min_position=position), timeout=10
    )
    assert [o.order_id for o in first.orders] == ids[:-4:-1]  # o7, o6, o5
    assert first.next_page_token
    assert_consistency(first.consistency, call, position)
    for summary in first.orders:
        assert (summary.customer_id, summary.status, summary.total) == (c, PENDING, 10)
        assert is_set(summary.created_at)

    # New orders arrive and one listed further down changes status while the client pages.
    newer, _ = _create_many(trio, c, 2)
    confirmed = trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=ids[2]), timeout=10)

    second = q.ListOrdersByCustomer(
        orders_pb2.ListOrdersByCustomerRequest(
            customer_id=c, page_size=3, page_token=first.next_page_token, min_position=confirmed.position
        ),
        timeout=10,
    )
    assert [o.order_id for o in second.orders] == [ids[3], ids[2], ids[1]]
    assert [o.status for o in second.orders] == [PENDING, CONFIRMED, PENDING]
    assert second.next_page_token

    third = q.ListOrdersByCustomer(
        orders_pb2.ListOrdersByCustomerRequest(customer_id=c, page_size=3, page_token=second.next_page_token),
        timeout=10,
    )
    assert [o.order_id for o in third.orders] == [ids[0]]
    assert third.next_page_token == ""

    again = q.ListOrdersByCustomer(
        orders_pb2.ListOrdersByCustomerRequest(customer_id=c, page_size=3), timeout=10
    )
    assert [o.order_id for o in again.orders] == [newer[1], newer[0], ids[6]]


def test_list_by_status_pages_skip_and_repeat_nothing_while_orders_arrive(trio: Trio) -> None:
    c = unique("c")
    mine, position = _create_many(trio, c, 6)
    moved = trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=mine[0]), timeout=10)
    position = moved.position
    expected_mine = mine[:0:-1]  # newest first, without the confirmed one

    seen: list[orders_pb2.OrderSummary] = []
    token = ""
    for page in range(2000):
        reply = trio.queries.ListOrdersByStatus(
            orders_pb2.ListOrdersByStatusRequest(
                status=PENDING, page_size=3, page_token=token, min_position=position
            ),
            timeout=10,
        )
        assert len(reply.orders) <= 3
        seen.extend(reply.orders)
        token = reply.next_page_token
        if not token:
            break
        if page < 3:  # new pending orders arrive between the first pages
            _create_many(trio, unique("c-other"), 2)
    else:
        pytest.fail("ListOrdersByStatus never returned an empty next_page_token")

    ids = [o.order_id for o in seen]
    assert len(ids) == len(set(ids)), "an order was listed twice"
    assert all(o.status == PENDING for o in seen)
    assert [i for i in ids if i in set(mine)] == expected_mine
    assert ids[:5] == expected_mine, "the newest pending orders were not listed first"
    created = [ms(o.created_at) for o in seen]
    assert created == sorted(created, reverse=True), "orders are not newest-first"


def test_page_size_0_means_50_and_at_most_500(trio: Trio) -> None:
    c = unique("c")
    futures: list[Future[Any]] = [
        trio.commands.CreateOrder.future(create_request(unique("o"), c), timeout=30) for _ in range(55)
    ]
    position = max(f.result().position for f in futures)

    first = trio.queries.ListOrdersByCustomer(
        orders_pb2.ListOrdersByCustomerRequest(customer_id=c, min_position=position), timeout=10
    )
    assert len(first.orders) == 50 and first.next_page_token
    rest = trio.queries.ListOrdersByCustomer(
        orders_pb2.ListOrdersByCustomerRequest(customer_id=c, page_token=first.next_page_token), timeout=10
    )
    assert len(rest.orders) == 5 and rest.next_page_token == ""
    everything = trio.queries.ListOrdersByCustomer(
        orders_pb2.ListOrdersByCustomerRequest(customer_id=c, page_size=100_000), timeout=10
    )
    assert len(everything.orders) == 55 and everything.next_page_token == ""
    assert {o.order_id for o in first.orders} | {o.order_id for o in rest.orders} == {
        o.order_id for o in everything.orders
    }


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------

BAD_QUERIES = [
    ("get-empty-order-id", "GetOrder", orders_pb2.GetOrderRequest(order_id=""), "order_id"),
    ("get-long-order-id", "GetOrder", orders_pb2.GetOrderRequest(order_id="o" * 129), "order_id"),
    ("get-control-order-id", "GetOrder", orders_pb2.GetOrderRequest(order_id="o\x01"), "order_id"),
    (
        "summary-empty-customer-id",
        "GetCustomerSummary",
        orders_pb2.GetCustomerSummaryRequest(customer_id=""),
        "customer_id",
    ),
    (
        "summary-long-customer-id",
        "GetCustomerSummary",
        orders_pb2.GetCustomerSummaryRequest(customer_id="c" * 129),
        "customer_id",
    ),
    (
        "by-customer-empty-customer-id",
        "ListOrdersByCustomer",
        orders_pb2.ListOrdersByCustomerRequest(customer_id=""),
        "customer_id",
    ),
    (
        "by-customer-control-customer-id",
        "ListOrdersByCustomer",
        orders_pb2.ListOrdersByCustomerRequest(customer_id="c\n"),
        "customer_id",
    ),
    (
        "by-customer-bad-page-token",
        "ListOrdersByCustomer",
        orders_pb2.ListOrdersByCustomerRequest(customer_id="c", page_token="not a page token!"),
        "page_token",
    ),
    (
        "by-customer-garbage-page-token",
        "ListOrdersByCustomer",
        orders_pb2.ListOrdersByCustomerRequest(customer_id="c", page_token="%%%%"),
        "page_token",
    ),
    (
        "by-status-unspecified",
        "ListOrdersByStatus",
        orders_pb2.ListOrdersByStatusRequest(status=S.ORDER_STATUS_UNSPECIFIED),
        "status",
    ),
    (
        "by-status-bad-page-token",
        "ListOrdersByStatus",
        orders_pb2.ListOrdersByStatusRequest(status=PENDING, page_token="not a page token!"),
        "page_token",
    ),
]


@pytest.mark.parametrize(
    ("rpc", "request_", "field"), [c[1:] for c in BAD_QUERIES], ids=[c[0] for c in BAD_QUERIES]
)
def test_a_malformed_query_is_invalid_argument_naming_the_field(
    trio: Trio, rpc: str, request_: Any, field: str
) -> None:
    error = rpc_error(getattr(trio.queries, rpc), request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    fields = bad_request_fields(error)
    assert field in fields, f"BadRequest fields {fields} do not name {field!r}"
    versions(error)  # the consistency versions come on errors too


# ------------------------------------------------------------------------------------------------
# Health and reflection
# ------------------------------------------------------------------------------------------------


def _reflected_services(channel: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    return [s.name for r in responses for s in r.list_services_response.service]


def _reflected_file(channel: grpc.Channel, symbol: str) -> bytes:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(
        stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)]), timeout=10
        )
    )
    assert len(responses) == 1 and responses[0].HasField("file_descriptor_response"), responses
    return b"".join(responses[0].file_descriptor_response.file_descriptor_proto)


@pytest.mark.parametrize(
    ("side", "service"), [("write", "orders.v1.OrderCommandService"), ("read", "orders.v1.OrderQueryService")]
)
def test_health_and_reflection_are_served(trio: Trio, side: str, service: str) -> None:
    channel = trio.write_channel() if side == "write" else trio.read_channel()
    assert health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert health(channel, service) == health_pb2.HealthCheckResponse.SERVING
    services = _reflected_services(channel)
    for name in (service, "grpc.health.v1.Health"):
        assert name in services, f"reflection lists {services}, not {name}"
    assert any(re.fullmatch(r"grpc\.reflection\.v1(alpha)?\.ServerReflection", s) for s in services), services
    assert b"orders/v1/orders.proto" in _reflected_file(channel, service)
