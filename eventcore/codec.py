"""Maps domain event objects to stable wire names, schema versions and JSON, and back.

Events are stored under a stable type name (never a Python import path) with a schema version. A
payload stored at an older version is upcast one step at a time on the way out, so domain code only
ever sees the current shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

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


class EventCodec:
    """Registry of event classes by wire name; encodes and decodes payloads."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Registration] = {}
        self._by_class: dict[type[Any], _Registration] = {}
        self._dumps = json_dumps
        self._loads = json_loads

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
