"""The order events, under stable wire names (the class names) at schema version 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from eventcore.codec import EventCodec

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: str
    quantity: int
    unit_price: int  # minor units

    def to_payload(self) -> Payload:
        return {"product_id": self.product_id, "quantity": self.quantity, "unit_price": self.unit_price}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(payload["product_id"], payload["quantity"], payload["unit_price"])


@dataclass(frozen=True, slots=True)
class OrderCreated:
    order_id: str
    customer_id: str
    items: tuple[OrderItem, ...]
    total: int

    def to_payload(self) -> Payload:
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "items": [item.to_payload() for item in self.items],
            "total": self.total,
        }

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        items = tuple(OrderItem.from_payload(item) for item in payload["items"])
        return cls(payload["order_id"], payload["customer_id"], items, payload["total"])


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    order_id: str

    def to_payload(self) -> Payload:
        return {"order_id": self.order_id}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(payload["order_id"])


@dataclass(frozen=True, slots=True)
class OrderShipped:
    order_id: str
    tracking_number: str

    def to_payload(self) -> Payload:
        return {"order_id": self.order_id, "tracking_number": self.tracking_number}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(payload["order_id"], payload["tracking_number"])


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order_id: str
    reason: str

    def to_payload(self) -> Payload:
        return {"order_id": self.order_id, "reason": self.reason}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(payload["order_id"], payload["reason"])


OrderEvent = OrderCreated | OrderConfirmed | OrderShipped | OrderCancelled
EVENT_TYPES: tuple[type[Any], ...] = (OrderCreated, OrderConfirmed, OrderShipped, OrderCancelled)


def order_codec() -> EventCodec:
    """A codec that knows every order event (all at schema version 1, so no upcasters yet)."""
    codec = EventCodec()
    for event_type in EVENT_TYPES:
        codec.register(event_type)
    return codec


def stream_id(order_id: str) -> str:
    """Orders live in streams of the `order` category: `order-<order_id>`."""
    return f"order-{order_id}"
