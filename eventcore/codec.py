"""Maps domain event objects to stable wire names, schema versions and JSON, and back.

Events are stored under a stable type name (never a Python import path) with a schema version. A
payload stored at an older version is upcast one step at a time on the way out, so domain code only
ever sees the current shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, Self

from eventcore.json_text import json_dumps, json_loads

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class SerializableEvent(Protocol):
    def to_payload(self) -> Payload: ...

    @classmethod
    def from_payload(cls, payload: Payload) -> Self: ...


@dataclass(slots=True)
class _Registration:
    cls: type[Any]
    name: str
    version: int
    upcasters: dict[int, Upcaster] = field(default_factory=dict)  # from-version -> next version


class UnknownEventType(Exception):
    """The log holds an event type this process does not know: a deployment mismatch."""


class UnknownEvent:
    """The event class of a type name no registration knows (never handled by anything)."""


class Undecoded(NamedTuple):
    """An event's data as stored, decoded only when something asks for it (see EventCodec.deferred).

    `event_class` is the registered class of the type name, `UnknownEvent` for a type this codec
    does not know: a reader can pass such an event over without ever parsing it.
    """

    type_name: str
    schema_version: int
    payload: str
    event_class: type[Any]
    codec: EventCodec

    def decode(self) -> Any:
        """The domain object; raises UnknownEventType or whatever the payload's shape breaks."""
        return self.codec.decode_now(self.type_name, self.schema_version, self.payload)


class EventCodec:
    """Registry of event classes by wire name; encodes and decodes payloads."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Registration] = {}
        self._by_class: dict[type[Any], _Registration] = {}
        self._dumps = json_dumps
        self._loads = json_loads
        self._deferred = False

    def deferred(self) -> EventCodec:
        """A codec over the same registrations whose `decode` returns Undecoded: a consumer that
        handles only some event types (a projection) decodes those and passes the others over."""
        twin = EventCodec()
        twin._by_name = self._by_name
        twin._by_class = self._by_class
        twin._deferred = True
        return twin

    def register(
        self,
        cls: type[Any],
        *,
        name: str | None = None,
        version: int = 1,
        upcasters: dict[int, Upcaster] | None = None,
    ) -> None:
        """Register cls under name (default: the class name) at schema version `version`.

        `upcasters[v]` turns a version-v payload into a version v+1 payload; every step from 1 to
        `version - 1` must be present.
        """
        wire_name = name or cls.__name__
        steps = dict(upcasters or {})
        missing = [v for v in range(1, version) if v not in steps]
        if missing:
            raise ValueError(f"{wire_name}: no upcaster from schema version(s) {missing}")
        if wire_name in self._by_name:
            raise ValueError(f"event type {wire_name!r} registered twice")
        registration = _Registration(cls, wire_name, version, steps)
        self._by_name[wire_name] = registration
        self._by_class[cls] = registration

    def type_name(self, event: Any) -> str:
        return self._registration_of(event).name

    def encode(self, event: Any) -> tuple[str, int, str]:
        """(type name, schema version, JSON payload) of a domain event."""
        registration = self._registration_of(event)
        return registration.name, registration.version, self._dumps(event.to_payload())

    def decode(self, type_name: str, schema_version: int, payload: str) -> Any:
        if self._deferred:
            registration = self._by_name.get(type_name)
            cls = registration.cls if registration is not None else UnknownEvent
            return Undecoded(type_name, schema_version, payload, cls, self)
        return self.decode_now(type_name, schema_version, payload)

    def decode_now(self, type_name: str, schema_version: int, payload: str) -> Any:
        """The domain object of a stored payload, upcast to the current schema version."""
        registration = self._by_name.get(type_name)
        if registration is None:
            raise UnknownEventType(f"unknown event type {type_name!r}")
        data: Payload = self._loads(payload)
        for version in range(schema_version, registration.version):
            data = registration.upcasters[version](data)
        return registration.cls.from_payload(data)

    def known_types(self) -> list[type[Any]]:
        return [r.cls for r in self._by_name.values()]

    def _registration_of(self, event: Any) -> _Registration:
        registration = self._by_class.get(type(event))
        if registration is None:
            raise UnknownEventType(f"{type(event).__name__} is not a registered event type")
        return registration
