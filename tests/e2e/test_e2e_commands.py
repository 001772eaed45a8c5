"""The write side over gRPC: replies, lifecycle status codes, optimistic concurrency, idempotency, validation.

Every refused command is also checked against the `events` table: nothing may be appended.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from e2e_support import (
    Trio,
    bad_request_fields,
    create_request,
    event_rows,
    item,
    rpc_error,
    total_of,
    unique,
)

from orders_api.v1 import orders_pb2

pytestmark = pytest.mark.e2e

MAX_TOTAL = 2**63 - 1


def long_id(prefix: str, length: int) -> str:
    base = unique(prefix)
    return base + "x" * (length - len(base))


def confirm(trio: Trio, order_id: str, **kw: Any) -> orders_pb2.CommandReply:
    return trio.commands.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=order_id, **kw), timeout=10)


def ship(trio: Trio, order_id: str, tracking_number: str = "TRK-1", **kw: Any) -> orders_pb2.CommandReply:
    return trio.commands.ShipOrder(
        orders_pb2.ShipOrderRequest(order_id=order_id, tracking_number=tracking_number, **kw), timeout=10
    )


def cancel(trio: Trio, order_id: str, reason: str = "", **kw: Any) -> orders_pb2.CommandReply:
    return trio.commands.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=order_id, reason=reason, **kw), timeout=10
    )


def create(trio: Trio, order_id: str, **kw: Any) -> orders_pb2.CommandReply:
    return trio.commands.CreateOrder(create_request(order_id, **kw), timeout=10)


def assert_refused(
    trio: Trio, call: Callable[..., Any], request: Any, code: grpc.StatusCode
) -> grpc.RpcError:
    """The call fails with `code` and the event store's head does not move."""
    before = trio.head()
    error = rpc_error(call, request)
    assert error.code() == code, f"{request!r}: expected {code}, got {error.code()}: {error.details()}"
    assert trio.head() == before, f"{request!r} was refused with {code} but appended events"
    return error


# ------------------------------------------------------------------------------------------------
# Replies
# ------------------------------------------------------------------------------------------------


def test_create_reply_describes_the_committed_event(trio: Trio) -> None:
    order_id, customer_id, command_id = unique("o"), unique("c"), unique("cmd")
    items = [item("sku-a", 2, 1250), item("sku-b", 1, 99)]
    before = trio.head()

    reply = create(trio, order_id, customer_id=customer_id, items=items, command_id=command_id)

    assert reply.deduplicated is False
    assert reply.stream_version == 1
    assert reply.position == before + 1
    assert len(reply.events) == 1
    event = reply.events[0]
    assert event.position == reply.position
    assert event.stream_id == f"order-{order_id}"
    assert event.stream_version == 1
    assert event.type == "OrderCreated"
    assert event.event_id
    assert event.command_id == command_id
    assert event.recorded_at.seconds > 0
    assert event.WhichOneof("payload") == "order_created"
    created = event.order_created
    assert created.order_id == order_id
    assert created.customer_id == customer_id
    assert list(created.items) == items
    assert created.total == 2 * 1250 + 99
    # Durable before the reply: the row is in the event store, readable by another process.
    assert event_rows(trio.events_db, before) == [(reply.position, f"order-{order_id}", 1, "OrderCreated")]


def test_confirm_ship_and_cancel_append_one_event_each(trio: Trio) -> None:
    a, b = unique("o"), unique("o")
    first = create(trio, a)
    confirmed = confirm(trio, a, expected_version=1)  # 1 is right for an order just created
    assert (confirmed.stream_version, confirmed.position) == (2, first.position + 1)
    assert [e.type for e in confirmed.events] == ["OrderConfirmed"]
    assert confirmed.events[0].order_confirmed.order_id == a
    assert confirmed.events[0].stream_id == f"order-{a}"

    shipped = ship(trio, a, tracking_number="1Z-999", expected_version=2)
    assert (shipped.stream_version, shipped.position) == (3, confirmed.position + 1)
    assert [e.type for e in shipped.events] == ["OrderShipped"]
    assert shipped.events[0].order_shipped.tracking_number == "1Z-999"
    assert shipped.events[0].order_shipped.order_id == a

    create(trio, b)
    cancelled = cancel(trio, b, reason="changed my mind")
    assert cancelled.stream_version == 2
    assert [e.type for e in cancelled.events] == ["OrderCancelled"]
    assert cancelled.events[0].order_cancelled.reason == "changed my mind"
    assert cancelled.events[0].order_cancelled.order_id == b

    rows = event_rows(trio.events_db, first.position - 1)
    mine = [r for r in rows if r[1] in (f"order-{a}", f"order-{b}")]
    assert [(r[1], r[2], r[3]) for r in mine] == [
        (f"order-{a}", 1, "OrderCreated"),
        (f"order-{a}", 2, "OrderConfirmed"),
        (f"order-{a}", 3, "OrderShipped"),
        (f"order-{b}", 1, "OrderCreated"),
        (f"order-{b}", 2, "OrderCancelled"),
    ]


def test_a_confirmed_order_can_be_cancelled(trio: Trio) -> None:
    order_id = unique("o")
    create(trio, order_id)
    confirm(trio, order_id)
    reply = cancel(trio, order_id)  # the reason is optional
    assert reply.stream_version == 3
    assert reply.events[0].order_cancelled.reason == ""


# ------------------------------------------------------------------------------------------------
# Lifecycle status codes
# ------------------------------------------------------------------------------------------------


def test_create_for_an_existing_order_is_already_exists(trio: Trio) -> None:
    order_id = unique("o")
    create(trio, order_id, customer_id="first")
    assert_refused(
        trio, trio.commands.CreateOrder, create_request(order_id, "second"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert_refused(
        trio,
        trio.commands.CreateOrder,
        create_request(order_id, "first", command_id=unique("cmd")),
        grpc.StatusCode.ALREADY_EXISTS,
    )


@pytest.mark.parametrize(
    "request_for",
    [
        lambda o: ("ConfirmOrder", orders_pb2.ConfirmOrderRequest(order_id=o)),
        lambda o: ("ShipOrder", orders_pb2.ShipOrderRequest(order_id=o, tracking_number="T")),
        lambda o: ("CancelOrder", orders_pb2.CancelOrderRequest(order_id=o)),
        lambda o: ("ConfirmOrder", orders_pb2.ConfirmOrderRequest(order_id=o, expected_version=1)),
    ],
    ids=["confirm", "ship", "cancel", "confirm-with-expected-version"],
)
def test_a_command_for_an_unknown_order_is_not_found(trio: Trio, request_for: Any) -> None:
    rpc, request = request_for(unique("missing"))
    assert_refused(trio, getattr(trio.commands, rpc), request, grpc.StatusCode.NOT_FOUND)


def _order_in(trio: Trio, status: str) -> str:
    order_id = unique(f"o-{status}")
    create(trio, order_id)
    if status in ("confirmed", "shipped"):
        confirm(trio, order_id)
    if status == "shipped":
        ship(trio, order_id)
    if status == "cancelled":
        cancel(trio, order_id)
    return order_id


FORBIDDEN = [
    ("pending", "ship"),
    ("confirmed", "confirm"),
    ("shipped", "confirm"),
    ("shipped", "ship"),
    ("shipped", "cancel"),
    ("cancelled", "confirm"),
    ("cancelled", "ship"),
    ("cancelled", "cancel"),
]


@pytest.mark.parametrize(("status", "command"), FORBIDDEN, ids=[f"{c}-a-{s}-order" for s, c in FORBIDDEN])
def test_a_transition_the_status_does_not_allow_is_failed_precondition(
    trio: Trio, status: str, command: str
) -> None:
    order_id = _order_in(trio, status)
    rpc, request = {
        "confirm": ("ConfirmOrder", orders_pb2.ConfirmOrderRequest(order_id=order_id)),
        "ship": ("ShipOrder", orders_pb2.ShipOrderRequest(order_id=order_id, tracking_number="T-1")),
        "cancel": ("CancelOrder", orders_pb2.CancelOrderRequest(order_id=order_id, reason="r")),
    }[command]
    assert_refused(trio, getattr(trio.commands, rpc), request, grpc.StatusCode.FAILED_PRECONDITION)


def test_a_wrong_expected_version_is_aborted_naming_both_versions(trio: Trio) -> None:
    order_id = unique("o")
    create(trio, order_id)
    confirm(trio, order_id, expected_version=1)  # now at version 2

    for wrong in (9, 1, 3, 0):
        error = assert_refused(
            trio,
            trio.commands.ShipOrder,
            orders_pb2.ShipOrderRequest(order_id=order_id, tracking_number="T", expected_version=wrong),
            grpc.StatusCode.ABORTED,
        )
        message = error.details() or ""
        assert re.search(rf"(?<!\d){wrong}(?!\d)", message) and re.search(r"(?<!\d)2(?!\d)", message), (
            f"ABORTED message {message!r} should name the expected version {wrong} and the actual version 2"
        )

    error = assert_refused(
        trio,
        trio.commands.CancelOrder,
        orders_pb2.CancelOrderRequest(order_id=order_id, expected_version=7),
        grpc.StatusCode.ABORTED,
    )
    assert "7" in (error.details() or "") and "2" in (error.details() or "")
    assert ship(trio, order_id, expected_version=2).stream_version == 3


# ------------------------------------------------------------------------------------------------
# Idempotency: command_id
# ------------------------------------------------------------------------------------------------


def test_a_retried_create_is_deduplicated_with_the_original_reply(trio: Trio) -> None:
    order_id, command_id = unique("o"), unique("cmd")
    request = create_request(order_id, "cust-dedup", [item("p", 3, 7)], command_id=command_id)
    original = trio.commands.CreateOrder(request, timeout=10)
    head = trio.head()

    retried = trio.commands.CreateOrder(request, timeout=10)

    assert retried.deduplicated is True
    assert retried.position == original.position
    assert retried.stream_version == original.stream_version == 1
    assert [e.event_id for e in retried.events] == [e.event_id for e in original.events]
    assert [e.position for e in retried.events] == [original.position]
    assert trio.head() == head, "a deduplicated command appended events"


def test_a_retry_after_later_commands_still_returns_the_original_reply(trio: Trio) -> None:
    order_id, create_id, confirm_id = unique("o"), unique("cmd"), unique("cmd")
    created = create(trio, order_id, command_id=create_id)
    confirmed = confirm(trio, order_id, command_id=confirm_id)
    ship(trio, order_id)
    head = trio.head()

    again = create(trio, order_id, command_id=create_id)  # not ALREADY_EXISTS: it is the same command
    assert (again.deduplicated, again.position, again.stream_version) == (True, created.position, 1)
    again = confirm(trio, order_id, command_id=confirm_id)  # not FAILED_PRECONDITION either
    assert (again.deduplicated, again.position, again.stream_version) == (True, confirmed.position, 2)
    assert trio.head() == head


def test_a_command_id_reused_with_a_different_request_is_invalid_argument(trio: Trio) -> None:
    command_id = unique("cmd")
    a, b = unique("o"), unique("o")
    create(trio, a, command_id=command_id)

    assert_refused(
        trio,
        trio.commands.CreateOrder,
        create_request(b, command_id=command_id),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_refused(
        trio,
        trio.commands.ConfirmOrder,
        orders_pb2.ConfirmOrderRequest(order_id=a, command_id=command_id),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # The refused create did not happen: b is still unknown to the write side.
    assert_refused(
        trio,
        trio.commands.ConfirmOrder,
        orders_pb2.ConfirmOrderRequest(order_id=b),
        grpc.StatusCode.NOT_FOUND,
    )

    confirm_id = unique("cmd")
    confirm(trio, a, command_id=confirm_id)
    assert_refused(
        trio,
        trio.commands.ConfirmOrder,
        orders_pb2.ConfirmOrderRequest(order_id=a, command_id=confirm_id, expected_version=1),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# ------------------------------------------------------------------------------------------------
# Validation: INVALID_ARGUMENT with a google.rpc.BadRequest naming the field, nothing appended
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orders_for_validation(shared_trio: Trio) -> Iterator[dict[str, str]]:
    """A pending and a confirmed order: commands on them fail only because of the malformed field."""
    pending, confirmed = unique("o-pending"), unique("o-confirmed")
    create(shared_trio, pending)
    create(shared_trio, confirmed)
    confirm(shared_trio, confirmed)
    yield {"pending": pending, "confirmed": confirmed}


ITEM_FIELD = r"items(\[\d+\]|\.\d+)?\.{}"
TOTAL_FIELD = r"items.*|total|.*unit_price|.*quantity"

CONTROL = ["\n", "\t", "\x00", "\x1b", "\x7f"]


def _bad_write_cases() -> list[tuple[str, str, Callable[[dict[str, str]], Any], str]]:
    """(id, rpc, request builder, regex one reported field must match)."""
    cases: list[tuple[str, str, Callable[[dict[str, str]], Any], str]] = [
        ("create-empty-order-id", "CreateOrder", lambda o: create_request(""), "order_id"),
        ("create-long-order-id", "CreateOrder", lambda o: create_request("o" * 129), "order_id"),
        ("create-empty-customer-id", "CreateOrder", lambda o: create_request(unique("o"), ""), "customer_id"),
        (
            "create-long-customer-id",
            "CreateOrder",
            lambda o: create_request(unique("o"), "c" * 129),
            "customer_id",
        ),
        (
            "create-control-customer-id",
            "CreateOrder",
            lambda o: create_request(unique("o"), "cu\nst"),
            "customer_id",
        ),
        (
            "create-empty-product-id",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("")]),
            ITEM_FIELD.format("product_id"),
        ),
        (
            "create-long-product-id",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("ok"), item("p" * 129)]),
            ITEM_FIELD.format("product_id"),
        ),
        ("create-no-items", "CreateOrder", lambda o: create_request(unique("o"), items=[]), "items"),
        (
            "create-101-items",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item(f"p{i}") for i in range(101)]),
            "items",
        ),
        (
            "create-quantity-0",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("a", 1), item("b", 0)]),
            ITEM_FIELD.format("quantity"),
        ),
        (
            "create-unit-price-over-max",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("a", 1, 2**63)]),
            TOTAL_FIELD,
        ),
        (
            "create-unit-price-max-uint64",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("a", 1, 2**64 - 1)]),
            TOTAL_FIELD,
        ),
        (
            "create-total-over-max-by-quantity",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("a", 2, 2**62)]),
            TOTAL_FIELD,
        ),
        (
            "create-total-over-max-by-sum",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("a", 1, MAX_TOTAL), item("b", 1, 1)]),
            TOTAL_FIELD,
        ),
        (
            "create-total-wraps-uint64",
            "CreateOrder",
            lambda o: create_request(unique("o"), items=[item("a", 4, 2**62), item("b", 1, 5)]),
            TOTAL_FIELD,
        ),
        (
            "create-long-command-id",
            "CreateOrder",
            lambda o: create_request(unique("o"), command_id="k" * 129),
            "command_id",
        ),
        (
            "confirm-empty-order-id",
            "ConfirmOrder",
            lambda o: orders_pb2.ConfirmOrderRequest(order_id=""),
            "order_id",
        ),
        (
            "confirm-long-order-id",
            "ConfirmOrder",
            lambda o: orders_pb2.ConfirmOrderRequest(order_id="o" * 129),
            "order_id",
        ),
        (
            "confirm-control-order-id",
            "ConfirmOrder",
            lambda o: orders_pb2.ConfirmOrderRequest(order_id=o["pending"] + "\x00"),
            "order_id",
        ),
        (
            "confirm-long-command-id",
            "ConfirmOrder",
            lambda o: orders_pb2.ConfirmOrderRequest(order_id=o["pending"], command_id="k" * 129),
            "command_id",
        ),
        (
            "ship-empty-tracking-number",
            "ShipOrder",
            lambda o: orders_pb2.ShipOrderRequest(order_id=o["confirmed"], tracking_number=""),
            "tracking_number",
        ),
        (
            "ship-long-tracking-number",
            "ShipOrder",
            lambda o: orders_pb2.ShipOrderRequest(order_id=o["confirmed"], tracking_number="t" * 129),
            "tracking_number",
        ),
        (
            "ship-empty-order-id",
            "ShipOrder",
            lambda o: orders_pb2.ShipOrderRequest(order_id="", tracking_number="T"),
            "order_id",
        ),
        (
            "ship-long-command-id",
            "ShipOrder",
            lambda o: orders_pb2.ShipOrderRequest(
                order_id=o["confirmed"], tracking_number="T", command_id="k" * 129
            ),
            "command_id",
        ),
        (
            "cancel-reason-501",
            "CancelOrder",
            lambda o: orders_pb2.CancelOrderRequest(order_id=o["pending"], reason="r" * 501),
            "reason",
        ),
        (
            "cancel-long-order-id",
            "CancelOrder",
            lambda o: orders_pb2.CancelOrderRequest(order_id="o" * 129),
            "order_id",
        ),
        (
            "cancel-long-command-id",
            "CancelOrder",
            lambda o: orders_pb2.CancelOrderRequest(order_id=o["pending"], command_id="k" * 129),
            "command_id",
        ),
    ]
    for n, char in enumerate(CONTROL):
        cases.append(
            (
                f"create-control-order-id-{n}",
                "CreateOrder",
                lambda o, c=char: create_request(f"ord{c}{unique('x')}"),
                "order_id",
            )
        )
    return cases


BAD_WRITES = _bad_write_cases()


@pytest.mark.parametrize(
    ("rpc", "build", "field"), [c[1:] for c in BAD_WRITES], ids=[c[0] for c in BAD_WRITES]
)
def test_a_malformed_command_is_invalid_argument_naming_the_field(
    trio: Trio, orders_for_validation: dict[str, str], rpc: str, build: Any, field: str
) -> None:
    request = build(orders_for_validation)
    error = assert_refused(trio, getattr(trio.commands, rpc), request, grpc.StatusCode.INVALID_ARGUMENT)
    fields = bad_request_fields(error)
    assert any(re.fullmatch(field, f) for f in fields), (
        f"BadRequest fields {fields} do not name {field!r} (message: {error.details()!r})"
    )


def test_every_malformed_field_is_named(trio: Trio) -> None:
    request = orders_pb2.CreateOrderRequest(order_id="", customer_id="", items=[], command_id="k" * 129)
    error = assert_refused(trio, trio.commands.CreateOrder, request, grpc.StatusCode.INVALID_ARGUMENT)
    fields = bad_request_fields(error)
    for name in ("order_id", "customer_id", "items", "command_id"):
        assert name in fields, f"BadRequest fields {fields} miss {name}"


def test_the_limits_themselves_are_accepted(trio: Trio, orders_for_validation: dict[str, str]) -> None:
    """1..128 characters (not bytes), 100 items, a total of exactly 2^63-1, a 500-character reason."""
    long_order = long_id("o", 128)
    reply = create(
        trio, long_order, customer_id="c" * 128, items=[item("p" * 128)], command_id=long_id("k", 128)
    )
    assert reply.events[0].order_created.order_id == long_order

    accented = "é" * 120 + unique("")[:8]
    assert len(accented) == 128
    assert create(trio, accented).events[0].stream_id == f"order-{accented}"

    hundred = [item(f"p{i}", 1, 3) for i in range(100)]
    assert create(trio, unique("o"), items=hundred).events[0].order_created.total == 300

    biggest = [item("a", 1, MAX_TOTAL - 10), item("b", 2, 5)]
    assert total_of(biggest) == MAX_TOTAL
    assert create(trio, unique("o"), items=biggest).events[0].order_created.total == MAX_TOTAL

    to_ship = unique("o")
    create(trio, to_ship)
    confirm(trio, to_ship)
    assert ship(trio, to_ship, tracking_number="t" * 128).events[0].order_shipped.tracking_number == "t" * 128

    to_cancel = unique("o")
    create(trio, to_cancel)
    assert cancel(trio, to_cancel, reason="r" * 500).events[0].order_cancelled.reason == "r" * 500
