"""Input rules: every malformed field is refused with InvalidArgument naming that field.

Checked on the validators and through the command bus, which must refuse before anything is queued
or appended.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from eventcore.command_bus import CommandBus
from eventcore.errors import FieldViolation, InvalidArgument
from eventcore.memory.event_store import InMemoryEventStore
from orders import commands as c
from orders import queries as q
from orders.order import OrderStatus
from servicekit.status import rich_status, status_code_of

from .support import cancel, confirm, create, item, ship

MAX = 2**63 - 1
LONG = "x" * 129
EDGE = "x" * 128
BAD_IDS = [
    pytest.param("", "must not be empty", id="empty"),
    pytest.param(LONG, "at most 128", id="129-chars"),
    pytest.param("ab\x00cd", "control", id="nul"),
    pytest.param("ab\ncd", "control", id="newline"),
    pytest.param("ab\x7f", "control", id="del"),
    pytest.param("ab\x85", "control", id="c1-control"),
]


def violations(command: Any) -> list[FieldViolation]:
    validator = {
        c.CreateOrder: c.validate_create,
        c.ConfirmOrder: c.validate_confirm,
        c.ShipOrder: c.validate_ship,
        c.CancelOrder: c.validate_cancel,
        q.GetOrder: q.validate_get_order,
        q.ListOrdersByCustomer: q.validate_by_customer,
        q.ListOrdersByStatus: q.validate_by_status,
        q.GetCustomerSummary: q.validate_customer_summary,
    }[type(command)]
    with pytest.raises(InvalidArgument) as refused:
        validator(command)
    assert status_code_of(refused.value) is grpc.StatusCode.INVALID_ARGUMENT
    return list(refused.value.violations)


def fields(command: Any) -> list[str]:
    return [v.field for v in violations(command)]


# -- ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "why"), BAD_IDS)
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda bad: create(bad), id="create"),
        pytest.param(lambda bad: confirm(bad), id="confirm"),
        pytest.param(lambda bad: ship(bad), id="ship"),
        pytest.param(lambda bad: cancel(bad), id="cancel"),
        pytest.param(lambda bad: q.GetOrder(bad), id="get-order"),
    ],
)
def test_bad_order_id_is_named(build: Any, bad: str, why: str) -> None:
    found = violations(build(bad))
    assert [v.field for v in found] == ["order_id"]
    assert why in found[0].description


@pytest.mark.parametrize(("bad", "why"), BAD_IDS)
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda bad: create("o-1", bad), id="create"),
        pytest.param(lambda bad: q.ListOrdersByCustomer(bad), id="list-by-customer"),
        pytest.param(lambda bad: q.GetCustomerSummary(bad), id="customer-summary"),
    ],
)
def test_bad_customer_id_is_named(build: Any, bad: str, why: str) -> None:
    found = violations(build(bad))
    assert [v.field for v in found] == ["customer_id"]
    assert why in found[0].description


@pytest.mark.parametrize(("bad", "why"), [p for p in BAD_IDS if p.id != "empty"])
def test_bad_product_id_is_named_with_its_index(bad: str, why: str) -> None:
    found = violations(create("o-1", items=(item("ok"), item(bad))))
    assert [v.field for v in found] == ["items[1].product_id"]
    assert why in found[0].description


def test_empty_product_id_is_named() -> None:
    assert fields(create("o-1", items=(item(""),))) == ["items[0].product_id"]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda cid: create("o-1", command_id=cid), id="create"),
        pytest.param(lambda cid: confirm("o-1", command_id=cid), id="confirm"),
        pytest.param(lambda cid: ship("o-1", command_id=cid), id="ship"),
        pytest.param(lambda cid: cancel("o-1", command_id=cid), id="cancel"),
    ],
)
def test_command_id_over_128_or_with_control_characters_is_named(build: Any) -> None:
    assert fields(build(LONG)) == ["command_id"]
    assert fields(build("id\x01")) == ["command_id"]
    validator = {
        c.CreateOrder: c.validate_create,
        c.ConfirmOrder: c.validate_confirm,
        c.ShipOrder: c.validate_ship,
        c.CancelOrder: c.validate_cancel,
    }
    for ok in ("", EDGE):  # optional: empty is fine, and 128 characters is the limit
        command = build(ok)
        validator[type(command)](command)


def test_ids_of_exactly_128_characters_are_accepted() -> None:
    c.validate_create(create(EDGE, EDGE, (item(EDGE),), command_id=EDGE))
    q.validate_get_order(q.GetOrder(EDGE))
    q.validate_by_customer(q.ListOrdersByCustomer(EDGE))


def test_ids_may_hold_non_ascii_printable_characters() -> None:
    c.validate_create(create("Bestellung-ä-✓", "kundé"))


# -- items ----------------------------------------------------------------------------------------


def test_no_items_is_named() -> None:
    found = violations(create("o-1", items=()))
    assert [v.field for v in found] == ["items"]
    assert "at least one" in found[0].description


def test_101_items_is_named_and_100_is_fine() -> None:
    found = violations(create("o-1", items=tuple(item(f"p{i}") for i in range(101))))
    assert [v.field for v in found] == ["items"]
    assert "at most 100" in found[0].description
    c.validate_create(create("o-1", items=tuple(item(f"p{i}") for i in range(100))))


def test_quantity_zero_is_named_with_its_index() -> None:
    found = violations(create("o-1", items=(item("a", 1), item("b", 2), item("c", 0))))
    assert [v.field for v in found] == ["items[2].quantity"]


def test_total_over_int64_max_is_named() -> None:
    found = violations(create("o-1", items=(item("a", 1, MAX), item("b", 1, 1))))
    assert [v.field for v in found] == ["items"]
    assert str(MAX) in found[0].description


def test_total_overflow_from_quantity_times_price_is_refused() -> None:
    assert fields(create("o-1", items=(item("a", 2**32 - 1, 2**32 + 1),))) == ["items"]


def test_total_of_exactly_int64_max_is_accepted() -> None:
    command = create("o-1", items=(item("a", 1, MAX - 10), item("b", 2, 5)))
    assert command.total == MAX
    c.validate_create(command)


# -- ship and cancel ------------------------------------------------------------------------------


def test_tracking_number_empty_or_over_128_is_named() -> None:
    assert fields(ship("o-1", "")) == ["tracking_number"]
    assert fields(ship("o-1", "T" * 129)) == ["tracking_number"]
    c.validate_ship(ship("o-1", "T" * 128))
    c.validate_ship(ship("o-1", "T"))


def test_reason_over_500_is_named() -> None:
    found = violations(cancel("o-1", "r" * 501))
    assert [v.field for v in found] == ["reason"]
    assert "500" in found[0].description
    c.validate_cancel(cancel("o-1", "r" * 500))
    c.validate_cancel(cancel("o-1", ""))


# -- several at once ------------------------------------------------------------------------------


def test_every_bad_field_is_named_in_one_refusal() -> None:
    command = c.CreateOrder("", LONG, (item("", 0), item("ok", 0)), command_id=LONG)
    assert set(fields(command)) == {
        "order_id",
        "customer_id",
        "command_id",
        "items[0].product_id",
        "items[0].quantity",
        "items[1].quantity",
    }
    assert set(fields(c.ShipOrder("", "", None, LONG))) == {"order_id", "tracking_number", "command_id"}


def test_bad_request_detail_names_each_field() -> None:
    error = InvalidArgument([FieldViolation("order_id", "must not be empty"), FieldViolation("items", "x")])
    status = rich_status(grpc.StatusCode.INVALID_ARGUMENT, str(error), error)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    from google.rpc import error_details_pb2, status_pb2

    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    detail = status_pb2.Status.FromString(value).details[0]
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["order_id", "items"]


# -- queries --------------------------------------------------------------------------------------


def test_unspecified_status_in_a_list_query_is_named() -> None:
    assert fields(q.ListOrdersByStatus(None)) == ["status"]
    q.validate_by_status(q.ListOrdersByStatus(OrderStatus.PENDING))


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "W10", "WyJieV9zdGF0dXMiXQ", "e30"])
def test_malformed_page_token_is_named(token: str) -> None:
    assert fields(q.ListOrdersByCustomer("cust-1", page_token=token)) == ["page_token"]
    assert fields(q.ListOrdersByStatus(OrderStatus.PENDING, page_token=token)) == ["page_token"]


def test_page_token_from_another_list_is_refused() -> None:
    by_customer = q.encode_page_token("by_customer", "cust-1", (5, "o-5"))
    by_status = q.encode_page_token("by_status", "PENDING", (5, "o-5"))
    q.validate_by_customer(q.ListOrdersByCustomer("cust-1", page_token=by_customer))
    q.validate_by_status(q.ListOrdersByStatus(OrderStatus.PENDING, page_token=by_status))
    assert fields(q.ListOrdersByCustomer("cust-2", page_token=by_customer)) == ["page_token"]
    assert fields(q.ListOrdersByCustomer("cust-1", page_token=by_status)) == ["page_token"]
    assert fields(q.ListOrdersByStatus(OrderStatus.PENDING, page_token=by_customer)) == ["page_token"]
    assert fields(q.ListOrdersByStatus(OrderStatus.SHIPPED, page_token=by_status)) == ["page_token"]


@pytest.mark.parametrize("order_value", ["five", 2**63, -1, True, 1.5, None])
def test_page_token_with_a_forged_cursor_is_refused(order_value: Any) -> None:
    """A cursor value the store could not even compare (SQLite integers end at 2^63-1) is a bad token."""
    forged = q.encode_page_token("by_customer", "cust-1", (order_value, "o-5"))
    assert fields(q.ListOrdersByCustomer("cust-1", page_token=forged)) == ["page_token"]


# -- through the bus: refused before anything is queued -------------------------------------------


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (create(""), "order_id"),
        (create("o-1", items=()), "items"),
        (create("o-1", items=tuple(item(f"p{i}") for i in range(101))), "items"),
        (create("o-1", items=(item("a", 0),)), "items[0].quantity"),
        (create("o-1", items=(item("a", 1, MAX), item("b", 1, 1))), "items"),
        (create("o-1", command_id=LONG), "command_id"),
        (confirm("o\x00"), "order_id"),
        (ship("o-1", ""), "tracking_number"),
        (ship("o-1", "T" * 129), "tracking_number"),
        (cancel("o-1", "r" * 501), "reason"),
    ],
)
async def test_bus_refuses_malformed_command_and_appends_nothing(
    bus: CommandBus, store: InMemoryEventStore, command: Any, field: str
) -> None:
    await bus.dispatch(create("o-1"))
    with pytest.raises(InvalidArgument) as refused:
        await bus.dispatch(command)
    assert field in [v.field for v in refused.value.violations]
    assert store.head_position() == 1
