"""Small builders shared by the unit tests."""

from __future__ import annotations

from orders.commands import CancelOrder, ConfirmOrder, CreateOrder, ShipOrder
from orders.events import OrderItem


def item(product_id: str = "sku-1", quantity: int = 1, unit_price: int = 100) -> OrderItem:
    return OrderItem(product_id, quantity, unit_price)


def create(
    order_id: str,
    customer_id: str = "cust-1",
    items: tuple[OrderItem, ...] | None = None,
    command_id: str = "",
) -> CreateOrder:
    return CreateOrder(order_id, customer_id, items if items is not None else (item(),), command_id)


def confirm(order_id: str, expected_version: int | None = None, command_id: str = "") -> ConfirmOrder:
    return ConfirmOrder(order_id, expected_version, command_id)


def ship(
    order_id: str, tracking_number: str = "TRACK-1", expected_version: int | None = None, command_id: str = ""
) -> ShipOrder:
    return ShipOrder(order_id, tracking_number, expected_version, command_id)


def cancel(
    order_id: str, reason: str = "changed my mind", expected_version: int | None = None, command_id: str = ""
) -> CancelOrder:
    return CancelOrder(order_id, reason, expected_version, command_id)
