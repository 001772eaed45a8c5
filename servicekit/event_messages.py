"""The orders domain's recorded events as `orders.v1.Event` messages, for every server that sends them
(command replies, subscriptions, stream reads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventcore.events import RecordedEvent
from orders import events
from orders_api.v1 import orders_pb2 as pb
from servicekit.protobuf import timestamp


def _created(data: events.OrderCreated) -> dict[str, Any]:
    items = [
        pb.OrderItem(product_id=i.product_id, quantity=i.quantity, unit_price=i.unit_price)
        for i in data.items
    ]
    return {
        "order_created": pb.OrderCreated(
            order_id=data.order_id, customer_id=data.customer_id, items=items, total=data.total
        )
    }


def _confirmed(data: events.OrderConfirmed) -> dict[str, Any]:
    return {"order_confirmed": pb.OrderConfirmed(order_id=data.order_id)}


def _shipped(data: events.OrderShipped) -> dict[str, Any]:
    return {"order_shipped": pb.OrderShipped(order_id=data.order_id, tracking_number=data.tracking_number)}


def _cancelled(data: events.OrderCancelled) -> dict[str, Any]:
    return {"order_cancelled": pb.OrderCancelled(order_id=data.order_id, reason=data.reason)}


_PAYLOAD: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    events.OrderCreated: _created,
    events.OrderConfirmed: _confirmed,
    events.OrderShipped: _shipped,
    events.OrderCancelled: _cancelled,
}


def event_message(event: RecordedEvent) -> pb.Event:
    return pb.Event(
        position=event.position,
        event_id=event.event_id,
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        type=event.type,
        recorded_at=timestamp(event.recorded_at_us),
        command_id=event.command_id,
        **_PAYLOAD[type(event.data)](event.data),
    )
