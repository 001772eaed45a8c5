"""The order aggregate: its state, how events change it, and the rules that decide commands.

Lifecycle: PENDING -> CONFIRMED -> SHIPPED; PENDING or CONFIRMED -> CANCELLED.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eventcore.command_bus import Aggregate, CommandHandler, Expects
from eventcore.errors import FailedPrecondition
from orders import commands as c
from orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderEvent,
    OrderShipped,
    stream_id,
)


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class OrderState:
    """All the write side needs to decide: where the order is in its lifecycle."""

    status: OrderStatus | None = None  # None: the order does not exist


_STATUS_AFTER: dict[type[Any], OrderStatus] = {
    OrderCreated: OrderStatus.PENDING,
    OrderConfirmed: OrderStatus.CONFIRMED,
    OrderShipped: OrderStatus.SHIPPED,
    OrderCancelled: OrderStatus.CANCELLED,
}
_STATES = {status: OrderState(status) for status in OrderStatus}


def evolve(state: OrderState, event: OrderEvent) -> OrderState:
    return _STATES[_STATUS_AFTER[type(event)]]


ORDER: Aggregate[OrderState] = Aggregate(initial=OrderState(), evolve=evolve)


def _require(state: OrderState, order_id: str, action: str, allowed: tuple[OrderStatus, ...]) -> None:
    if state.status not in allowed:
        status = state.status.value if state.status else "missing"
        names = " or ".join(s.value for s in allowed)
        raise FailedPrecondition(f"order {order_id!r} is {status}; only a {names} order can be {action}")


def decide_create(state: OrderState, command: c.CreateOrder) -> list[OrderEvent]:
    return [OrderCreated(command.order_id, command.customer_id, command.items, command.total)]


def decide_confirm(state: OrderState, command: c.ConfirmOrder) -> list[OrderEvent]:
    _require(state, command.order_id, "confirmed", (OrderStatus.PENDING,))
    return [OrderConfirmed(command.order_id)]


def decide_ship(state: OrderState, command: c.ShipOrder) -> list[OrderEvent]:
    _require(state, command.order_id, "shipped", (OrderStatus.CONFIRMED,))
    return [OrderShipped(command.order_id, command.tracking_number)]


def decide_cancel(state: OrderState, command: c.CancelOrder) -> list[OrderEvent]:
    _require(state, command.order_id, "cancelled", (OrderStatus.PENDING, OrderStatus.CONFIRMED))
    return [OrderCancelled(command.order_id, command.reason)]


def _stream(command: c.OrderCommand) -> str:
    return stream_id(command.order_id)


def _describe(command: c.OrderCommand) -> str:
    return f"order {command.order_id!r}"


def command_handlers() -> dict[type[Any], CommandHandler[Any, OrderState]]:
    """The command table: one declarative handler per command type."""
    return {
        c.CreateOrder: CommandHandler(
            ORDER, Expects.NEW_STREAM, _stream, decide_create, _describe, c.validate_create
        ),
        c.ConfirmOrder: CommandHandler(
            ORDER, Expects.EXISTING_STREAM, _stream, decide_confirm, _describe, c.validate_confirm
        ),
        c.ShipOrder: CommandHandler(
            ORDER, Expects.EXISTING_STREAM, _stream, decide_ship, _describe, c.validate_ship
        ),
        c.CancelOrder: CommandHandler(
            ORDER, Expects.EXISTING_STREAM, _stream, decide_cancel, _describe, c.validate_cancel
        ),
    }
