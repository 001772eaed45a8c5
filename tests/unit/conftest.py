"""Fixtures of the unit layer: the orders domain wired to the in-memory stores, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventcore.codec import EventCodec
from eventcore.command_bus import CommandBus
from eventcore.event_store import EventStore
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.projection import ProjectionRunner
from orders.events import order_codec
from orders.order import command_handlers
from orders.projections import PROJECTIONS


@pytest.fixture
def codec() -> EventCodec:
    return order_codec()


@pytest.fixture
def store(codec: EventCodec) -> InMemoryEventStore:
    return InMemoryEventStore(codec)


@pytest.fixture
async def bus(store: InMemoryEventStore) -> AsyncIterator[CommandBus]:
    bus = order_bus(store)
    yield bus
    await bus.close()


def order_bus(store: EventStore, **options: int) -> CommandBus:
    bus = CommandBus(store, **options)
    for command_type, handler in command_handlers().items():
        bus.register(command_type, handler)
    return bus


@pytest.fixture
def read_store() -> InMemoryReadStoreWriter:
    return InMemoryReadStoreWriter()


@pytest.fixture
def runner(store: InMemoryEventStore, read_store: InMemoryReadStoreWriter) -> ProjectionRunner:
    runner = ProjectionRunner(store, read_store, PROJECTIONS, batch_size=7)
    runner.prepare()
    return runner
