"""The orders domain's recorded events as `orders.v1.Event` messages, for every server that sends them
(command replies, subscriptions, stream reads).

Messages are filled in place (`fill_event` on a message that `repeated.add()` or a parent created),
not built from keyword arguments: a keyword sub-message is built first and then copied into its
parent, which doubled the cost of a command's reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventcore.events import RecordedEvent
from orders import events
from orders_api.v1 import orders_pb2 as pb


def _created(message: pb.Event, data: events.OrderCreated) -> None:
    created = message.order_created
    created.order_id = data.order_id
    created.customer_id = data.customer_id
    created.total = data.total
    add = created.items.add
    for item in data.items:
        add(product_id=item.product_id, quantity=item.quantity, unit_price=item.unit_price)


def _confirmed(message: pb.Event, data: events.OrderConfirmed) -> None:
    message.order_confirmed.order_id = data.order_id


def _shipped(message: pb.Event, data: events.OrderShipped) -> None:
    shipped = message.order_shipped
    shipped.order_id = data.order_id
    shipped.tracking_number = data.tracking_number


def _cancelled(message: pb.Event, data: events.OrderCancelled) -> None:
    cancelled = message.order_cancelled
    cancelled.order_id = data.order_id
    cancelled.reason = data.reason


_PAYLOAD: dict[type[Any], Callable[[Any, Any], None]] = {
    events.OrderCreated: _created,
    events.OrderConfirmed: _confirmed,
    events.OrderShipped: _shipped,
    events.OrderCancelled: _cancelled,
}


def fill_event(message: pb.Event, event: RecordedEvent) -> None:
    """Set every field of an empty `orders.v1.Event` from a recorded event."""
    message.position = event.position
    message.event_id = event.event_id
    message.stream_id = event.stream_id
    message.stream_version = event.stream_version
    message.type = event.type
    message.command_id = event.command_id
    seconds, micros = divmod(event.recorded_at_us, 1_000_000)
    recorded_at = message.recorded_at
    recorded_at.seconds = seconds
    recorded_at.nanos = micros * 1000
    _PAYLOAD[type(event.data)](message, event.data)


def event_message(event: RecordedEvent) -> pb.Event:
    message = pb.Event()
    fill_event(message, event)
    return message
