"""Fixtures of the contract layer: one suite per storage interface, run against every backend
(memory, SQLite, and PostgreSQL on a fresh database per test)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postgres_support import fresh_database

from eventcore.event_store import EventStore
from eventcore.memory.event_store import InMemoryEventStore
from eventcore.memory.read_store import InMemoryReadStoreWriter
from eventcore.postgres.event_store import PostgresEventStore
from eventcore.postgres.read_store import PostgresReadStoreWriter
from eventcore.read_store import ReadStoreWriter
from eventcore.sqlite.event_store import SQLiteEventStore
from eventcore.sqlite.read_store import SQLiteReadStoreWriter
from orders.events import order_codec

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def event_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    store: EventStore
    if request.param == "postgres":
        with fresh_database() as url:
            store = PostgresEventStore.open(url, order_codec())
            yield store
            store.close()
        return
    if request.param == "memory":
        store = InMemoryEventStore(order_codec())
    else:
        store = SQLiteEventStore.open(tmp_path / "events.db", order_codec())
    yield store
    store.close()


@pytest.fixture(params=BACKENDS)
def read_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadStoreWriter]:
    store: ReadStoreWriter
    if request.param == "postgres":
        with fresh_database() as url:
            store = PostgresReadStoreWriter.open(url)
            yield store
            store.close()
        return
    if request.param == "memory":
        store = InMemoryReadStoreWriter()
    else:
        store = SQLiteReadStoreWriter.open(tmp_path / "read.db")
    yield store
    store.close()
