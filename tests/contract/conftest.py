"""Fixtures of the contract layer: one suite per storage interface, run against every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventcore.event_store import EventStore
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.read_store import ReadStoreWriter
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import order_codec


@pytest.fixture(params=["memory", "sqlite"])
def event_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    store: EventStore
    if request.param == "memory":
        store = InMemoryEventStore(order_codec())
    else:
        store = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    yield store
    store.close()


@pytest.fixture(params=["memory", "sqlite"])
def read_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadStoreWriter]:
    store: ReadStoreWriter
    if request.param == "memory":
        store = InMemoryReadStoreWriter()
    else:
        store = SQLiteReadStoreWriter.open(tmp_path / "read.db")
    yield store
    store.close()
