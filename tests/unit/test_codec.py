"""The event codec: stable wire names, JSON payloads, schema versions and upcasting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Self

import pytest

from eventcore.codec import EventCodec, UnknownEventType
from orders.events import (
    EVENT_TYPES,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderItem,
    OrderShipped,
    order_codec,
)

EVENTS = [
    OrderCreated("o-1", "cust-1", (OrderItem("p-1", 2, 150), OrderItem("p-2", 1, 2**63 - 301)), 2**63 - 1),
    OrderConfirmed("o-1"),
    OrderShipped("o-1", "TRACK-ü-✓"),
    OrderCancelled("o-1", 'a "quoted"\nreason'),
    OrderCancelled("o-1", ""),
]

# What the event store holds for each event type at schema version 1. Stored events must keep
# decoding: changing a payload's shape needs a new schema version and an upcaster, not an edit here.
GOLDEN_V1 = {
    "OrderCreated": (
        '{"order_id":"o","customer_id":"c","items":[{"product_id":"p","quantity":3,"unit_price":7}],"total":21}',
        OrderCreated("o", "c", (OrderItem("p", 3, 7),), 21),
    ),
    "OrderConfirmed": ('{"order_id":"o"}', OrderConfirmed("o")),
    "OrderShipped": ('{"order_id":"o","tracking_number":"T-1"}', OrderShipped("o", "T-1")),
    "OrderCancelled": ('{"order_id":"o","reason":"r"}', OrderCancelled("o", "r")),
}


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_order_events_round_trip(event: Any) -> None:
    codec = order_codec()
    name, version, payload = codec.encode(event)
    assert name == type(event).__name__
    assert version == 1
    assert isinstance(json.loads(payload), dict)
    assert codec.decode(name, version, payload) == event


@pytest.mark.parametrize("name", list(GOLDEN_V1))
def test_stored_v1_payloads_still_decode(name: str) -> None:
    payload, expected = GOLDEN_V1[name]
    assert order_codec().decode(name, 1, payload) == expected
    assert json.loads(order_codec().encode(expected)[2]) == json.loads(payload)


def test_every_order_event_is_registered_under_its_class_name() -> None:
    codec = order_codec()
    assert set(codec.known_types()) == set(EVENT_TYPES)
    assert {codec.type_name(e) for e in EVENTS} == set(GOLDEN_V1)


def test_unknown_types_are_refused_both_ways() -> None:
    codec = order_codec()
    with pytest.raises(UnknownEventType, match="OrderLost"):
        codec.decode("OrderLost", 1, "{}")
    with pytest.raises(UnknownEventType):
        codec.encode(Renamed("x"))


# -- schema versions and upcasting ----------------------------------------------------------------


@dataclass(frozen=True)
class RenamedV1:
    """How the event looked when it was first stored: {"n": ...}."""

    n: str

    def to_payload(self) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        return cls(payload["n"])


@dataclass(frozen=True)
class Renamed:
    """Version 2: {"name": ..., "size": ...}; version 3 adds "tags"."""

    name: str
    size: int = 0
    tags: tuple[str, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "tags": list(self.tags)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        return cls(payload["name"], payload["size"], tuple(payload.get("tags", ())))


def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {"name": payload["n"], "size": len(payload["n"])}


def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "tags": ["migrated", f"size-{payload['size']}"]}


def test_a_v1_payload_is_upcast_to_the_registered_v2() -> None:
    old = EventCodec()
    old.register(RenamedV1, name="ThingRenamed")
    name, version, payload = old.encode(RenamedV1("abc"))
    assert (name, version, payload) == ("ThingRenamed", 1, '{"n":"abc"}')

    new = EventCodec()
    new.register(Renamed, name="ThingRenamed", version=2, upcasters={1: v1_to_v2})
    assert new.decode(name, version, payload) == Renamed("abc", 3)
    encoded = new.encode(Renamed("xy", 2))
    assert encoded[:2] == ("ThingRenamed", 2)
    assert new.decode(*encoded) == Renamed("xy", 2)  # a current payload is not upcast


def test_upcasters_are_applied_one_step_at_a_time_in_order() -> None:
    calls: list[int] = []

    def step(version: int, upcast: Any) -> Any:
        def recorded(payload: dict[str, Any]) -> dict[str, Any]:
            calls.append(version)
            return upcast(payload)

        return recorded

    codec = EventCodec()
    upcasters = {1: step(1, v1_to_v2), 2: step(2, v2_to_v3)}
    codec.register(Renamed, name="ThingRenamed", version=3, upcasters=upcasters)
    assert codec.decode("ThingRenamed", 1, '{"n":"abcd"}') == Renamed("abcd", 4, ("migrated", "size-4"))
    assert calls == [1, 2]
    calls.clear()
    v2_payload = '{"name":"ab","size":9}'
    assert codec.decode("ThingRenamed", 2, v2_payload) == Renamed("ab", 9, ("migrated", "size-9"))
    assert calls == [2]


def test_a_missing_upcaster_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match=r"\[2\]"):
        EventCodec().register(Renamed, version=3, upcasters={1: v1_to_v2})
    with pytest.raises(ValueError, match=r"\[1\]"):
        EventCodec().register(Renamed, version=2)


def test_a_wire_name_cannot_be_registered_twice() -> None:
    codec = EventCodec()
    codec.register(Renamed, name="ThingRenamed")
    with pytest.raises(ValueError, match="twice"):
        codec.register(RenamedV1, name="ThingRenamed")
